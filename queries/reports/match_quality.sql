-- title: Match quality: conversions by strongest match key, dedup-key coverage, server vs browser sources
-- param: from date 1970-01-01 first UTC day
-- param: to date 9999-12-31 last UTC day, inclusive
-- Three sections, one row per category with its count and its share of the section:
--   match_key: distinct conversions by the strongest identifier any deterministic row matched on
--              (click_id > em > ph > external_id), `cohort` if only probabilistic, `none` if unattributed;
--   dedup_key: received copies (test events excluded) with and without an `event_id`;
--   sources:   distinct conversions seen from the server only, the browser only, or both.
with dedup as (
    select advertiser_id, conversion_key, sources
    from conversions_dedup
    where date between $from and $to
),
strongest as (
    select
        advertiser_id,
        conversion_key,
        min(case match_key when 'click_id' then 1 when 'em' then 2 when 'ph' then 3 when 'external_id' then 4 else 5 end) as rank
    from attributed_conversions
    where date between $from and $to
    group by advertiser_id, conversion_key
),
by_key as (
    select
        d.advertiser_id,
        'match_key' as section,
        case s.rank when 1 then 'click_id' when 2 then 'em' when 3 then 'ph' when 4 then 'external_id' when 5 then 'cohort' else 'none' end as category,
        count(*) as conversions
    from dedup d
    left join strongest s on s.advertiser_id = d.advertiser_id and s.conversion_key = d.conversion_key
    group by 1, 2, 3
),
by_dedup_key as (
    select
        advertiser_id,
        'dedup_key' as section,
        case when event_id is null then 'without event_id' else 'with event_id' end as category,
        count(*) as conversions
    from conversions
    where date between $from and $to and not is_test
    group by 1, 2, 3
),
by_source as (
    select advertiser_id, 'sources' as section, sources as category, count(*) as conversions
    from dedup
    group by 1, 2, 3
),
sections as (
    select * from by_key
    union all select * from by_dedup_key
    union all select * from by_source
)
select
    advertiser_id,
    section,
    category,
    conversions,
    round(100.0 * conversions / sum(conversions) over (partition by advertiser_id, section), 2) as pct
from sections
order by advertiser_id, section, category

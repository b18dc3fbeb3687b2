-- Client vs server reconciliation (SPEC section 7), one row per advertiser, day, channel and
-- campaign. $1, $2: the first and last UTC day. Channel and campaign come from the
-- deterministic last_touch attribution (NULL for unattributed conversions); attributed_server
-- adds the probabilistic last_touch credit; match_rate is the day's share of conversions
-- with a deterministic match (the same on every row of the day).
with conv as (
    select d.advertiser_id, cast(d.event_time as date) as date, d.sources, d.event_id is not null as keyed,
           a.channel, a.campaign_id
    from conversions_dedup d
    left join (
        select conversion_key, channel, campaign_id from attributed_conversions
        where model = 'last_touch' and method = 'deterministic'
    ) a on a.conversion_key = d.conversion_key
    where cast(d.event_time as date) between $1 and $2
),
day as (
    select advertiser_id, date, avg(case when channel is not null then 1.0 else 0.0 end) as match_rate
    from conv group by advertiser_id, date
),
grp as (
    select advertiser_id, date, channel, campaign_id,
           sum(case when sources = 'server' then 1 else 0 end) as server_only,
           sum(case when sources = 'browser' then 1 else 0 end) as browser_only,
           sum(case when sources = 'both' then 1 else 0 end) as both,
           avg(case when keyed then 1.0 else 0.0 end) as dedup_key_coverage
    from conv group by advertiser_id, date, channel, campaign_id
),
attr as (
    select advertiser_id, cast(event_time as date) as date, channel, campaign_id, sum(credit) as attributed
    from attributed_conversions
    where model = 'last_touch' and cast(event_time as date) between $1 and $2
    group by advertiser_id, cast(event_time as date), channel, campaign_id
),
base as (
    select advertiser_id, date, channel, campaign_id, sum(conversions) as conversions
    from baseline where date between $1 and $2
    group by advertiser_id, date, channel, campaign_id
),
ga as (
    select coalesce(g.advertiser_id, a.advertiser_id) as advertiser_id, coalesce(g.date, a.date) as date,
           coalesce(g.channel, a.channel) as channel, coalesce(g.campaign_id, a.campaign_id) as campaign_id,
           g.server_only, g.browser_only, g.both, g.dedup_key_coverage, a.attributed
    from grp g full join attr a
      on g.advertiser_id = a.advertiser_id and g.date = a.date and g.channel = a.channel and g.campaign_id = a.campaign_id
),
gab as (
    select coalesce(x.advertiser_id, b.advertiser_id) as advertiser_id, coalesce(x.date, b.date) as date,
           coalesce(x.channel, b.channel) as channel, coalesce(x.campaign_id, b.campaign_id) as campaign_id,
           x.server_only, x.browser_only, x.both, x.dedup_key_coverage, x.attributed, b.conversions as baseline_conversions
    from ga x full join base b
      on x.advertiser_id = b.advertiser_id and x.date = b.date and x.channel = b.channel and x.campaign_id = b.campaign_id
)
select r.advertiser_id, r.date, r.channel, r.campaign_id,
       cast(coalesce(r.server_only, 0) as bigint) as server_only,
       cast(coalesce(r.browser_only, 0) as bigint) as browser_only,
       cast(coalesce(r.both, 0) as bigint) as both,
       cast(coalesce(r.dedup_key_coverage, 0.0) as double) as dedup_key_coverage,
       cast(coalesce(day.match_rate, 0.0) as double) as match_rate,
       cast(case when r.channel is null then 0.0 else coalesce(r.attributed, 0.0) end as double) as attributed_server,
       cast(r.baseline_conversions as double) as baseline_conversions
from gab r left join day on day.advertiser_id = r.advertiser_id and day.date = r.date
order by r.advertiser_id, r.date, r.channel nulls last, r.campaign_id

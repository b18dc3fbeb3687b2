-- title: Path length distribution: deterministically matched conversions by number of touches in their path
-- param: from date 1970-01-01 first UTC day
-- param: to date 9999-12-31 last UTC day, inclusive
-- The path is every eligible matched touch (the `linear` model credits each of them once).
with paths as (
    select advertiser_id, conversion_key, count(*) as touches
    from attributed_conversions
    where date between $from and $to and model = 'linear' and method = 'deterministic'
    group by advertiser_id, conversion_key
),
lengths as (
    select advertiser_id, touches, count(*) as conversions
    from paths
    group by advertiser_id, touches
)
select
    advertiser_id,
    touches as path_length,
    conversions,
    round(100.0 * conversions / sum(conversions) over (partition by advertiser_id), 2) as pct,
    round(100.0 * sum(conversions) over (partition by advertiser_id order by touches) / sum(conversions) over (partition by advertiser_id), 2) as cumulative_pct
from lengths
order by advertiser_id, path_length

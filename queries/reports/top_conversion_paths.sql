-- title: Top conversion paths: the most frequent channel sequences of deterministically matched conversions
-- param: from date 1970-01-01 first UTC day
-- param: to date 9999-12-31 last UTC day, inclusive
-- param: top int 20 how many paths to show (per advertiser)
-- A path is its touches' channels in path order (touch_time, touch_id), consecutive repeats
-- collapsed into `channel xN` (what `path_agg` computes); value is the conversions' total value.
with path_touches as (
    select a.advertiser_id, a.conversion_key, a.value_credit, t.channel, t.touch_time, t.touch_id
    from attributed_conversions a
    join touchpoints t on t.advertiser_id = a.advertiser_id and t.touch_id = a.touch_id
    where a.date between $from and $to
      and a.model = 'linear' and a.method = 'deterministic'
      and t.date <= $to
),
paths as (
    select advertiser_id, conversion_key, path_agg(channel, touch_time, touch_id) as path, count(*) as touches, sum(value_credit) as value
    from path_touches
    group by advertiser_id, conversion_key
),
ranked as (
    select advertiser_id, path, min(touches) as touches, count(*) as conversions, sum(value) as value,
           row_number() over (partition by advertiser_id order by count(*) desc, path) as rank
    from paths
    group by advertiser_id, path
)
select advertiser_id, rank, path, touches, conversions, round(coalesce(value, 0), 2) as value
from ranked
where rank <= $top
order by advertiser_id, rank

-- title: Daily conversions by source: received copies per day, source (pixel) and origin
-- param: from date 1970-01-01 first UTC day
-- param: to date 9999-12-31 last UTC day, inclusive
-- Counts what was received, before deduplication; test events are excluded.
select
    advertiser_id,
    date,
    source_id,
    origin,
    count(*) as conversions,
    count(event_id) as with_event_id,
    count(distinct event_id) as distinct_event_ids,
    round(coalesce(sum(value), 0), 2) as value
from conversions
where date between $from and $to and not is_test
group by advertiser_id, date, source_id, origin
order by advertiser_id, date, source_id, origin

-- Daily last_touch credit per channel: deterministic, total (deterministic + probabilistic)
-- and its value. $1, $2: the first and last UTC day.
select advertiser_id, cast(event_time as date) as date, channel,
       sum(case when method = 'deterministic' then credit else 0.0 end) as deterministic,
       sum(credit) as total,
       sum(coalesce(value_credit, 0.0)) as value
from attributed_conversions
where model = 'last_touch' and cast(event_time as date) between $1 and $2
group by advertiser_id, cast(event_time as date), channel

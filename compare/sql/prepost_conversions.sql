-- Daily distinct conversions and those with a deterministic match. $1, $2: first and last day.
select d.advertiser_id, cast(d.event_time as date) as date, count(*) as conversions,
       sum(case when m.conversion_key is not null then 1 else 0 end) as matched
from conversions_dedup d
left join (
    select distinct conversion_key from attributed_conversions where method = 'deterministic'
) m on m.conversion_key = d.conversion_key
where cast(d.event_time as date) between $1 and $2
group by d.advertiser_id, cast(d.event_time as date)

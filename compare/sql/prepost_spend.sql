-- Daily spend per channel. $1, $2: the first and last UTC day.
select advertiser_id, date, channel, sum(spend) as spend
from spend where date between $1 and $2
group by advertiser_id, date, channel

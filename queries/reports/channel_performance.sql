-- title: Channel performance: attributed conversions, value, spend, CPA and ROAS per channel and model
-- param: from date 1970-01-01 first UTC day (of conversions and of spend)
-- param: to date 9999-12-31 last UTC day, inclusive
-- Conversions and value are the summed credit (deterministic and probabilistic) of each model;
-- spend is the channel's spend over the same days. CPA = spend / conversions, ROAS = value / spend.
with credit as (
    select advertiser_id, channel, model, sum(credit) as conversions, sum(value_credit) as value
    from attributed_conversions
    where date between $from and $to and channel is not null
    group by advertiser_id, channel, model
),
cost as (
    select advertiser_id, channel, sum(spend) as spend
    from spend
    where date between $from and $to
    group by advertiser_id, channel
)
select
    c.advertiser_id,
    c.channel,
    c.model,
    round(c.conversions, 2) as conversions,
    round(coalesce(c.value, 0), 2) as value,
    round(coalesce(s.spend, 0), 2) as spend,
    round(safe_div(s.spend, c.conversions), 2) as cpa,
    round(safe_div(c.value, s.spend), 4) as roas
from credit c
left join cost s on s.advertiser_id = c.advertiser_id and s.channel = c.channel
order by c.advertiser_id, c.channel, c.model

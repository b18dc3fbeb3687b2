-- title: Campaign ROAS: attributed conversions, value, spend, CPA and ROAS per campaign under one model
-- param: from date 1970-01-01 first UTC day
-- param: to date 9999-12-31 last UTC day, inclusive
-- param: model text last_touch attribution model (last_touch, first_touch, linear, position_based, time_decay, markov)
-- Campaigns with spend but no credited conversion are listed too (conversions 0, ROAS 0).
with credit as (
    select advertiser_id, channel, campaign_id, sum(credit) as conversions, sum(value_credit) as value
    from attributed_conversions
    where date between $from and $to and model = $model and campaign_id is not null
    group by advertiser_id, channel, campaign_id
),
cost as (
    select advertiser_id, channel, campaign_id, sum(spend) as spend
    from spend
    where date between $from and $to
    group by advertiser_id, channel, campaign_id
)
select
    coalesce(c.advertiser_id, s.advertiser_id) as advertiser_id,
    coalesce(c.channel, s.channel) as channel,
    coalesce(c.campaign_id, s.campaign_id) as campaign_id,
    round(coalesce(c.conversions, 0), 2) as conversions,
    round(coalesce(c.value, 0), 2) as value,
    round(coalesce(s.spend, 0), 2) as spend,
    round(safe_div(s.spend, c.conversions), 2) as cpa,
    round(safe_div(coalesce(c.value, 0), s.spend), 4) as roas
from credit c
full outer join cost s
    on s.advertiser_id = c.advertiser_id and s.channel = c.channel and s.campaign_id = c.campaign_id
order by advertiser_id, channel, campaign_id

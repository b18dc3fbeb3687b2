//! Row builders: turn simulated users into Arrow record batches of the output schemas
//! ([`crate::schema`]). Each builder accumulates rows until the caller takes a batch,
//! so memory stays bounded by the batch size.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::catalog::Catalog;
use crate::config::DEVICES;
use crate::sim::{EM, EXT, PH, UserWorld, state_name};
use crate::{Error, Table, table_schema};

fn ts() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, Error> {
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn opt(b: &mut StringBuilder, present: bool, value: &str) {
    if present {
        b.append_value(value);
    } else {
        b.append_null();
    }
}

/// Conversions and truth rows of one advertiser's users.
pub(crate) struct ConversionRows {
    schema: SchemaRef,
    truth_schema: SchemaRef,
    rows: usize,
    truth_rows: usize,
    advertiser_id: StringBuilder,
    source_id: StringBuilder,
    event_id: StringBuilder,
    event_name: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    origin: StringBuilder,
    action_source: StringBuilder,
    id: [StringBuilder; 3],
    click_id: StringBuilder,
    device_os: StringBuilder,
    geo_state: StringBuilder,
    value: Float64Builder,
    currency: StringBuilder,
    order_id: StringBuilder,
    is_test: BooleanBuilder,
    opt_out: BooleanBuilder,
    // truth
    t_advertiser_id: StringBuilder,
    t_source_id: StringBuilder,
    t_event_id: StringBuilder,
    t_order_id: StringBuilder,
    t_event_time: TimestampMicrosecondBuilder,
    t_channel: StringBuilder,
    t_campaign: StringBuilder,
    t_touch: StringBuilder,
    t_in_server: BooleanBuilder,
    t_in_browser: BooleanBuilder,
    t_has_event_id: BooleanBuilder,
    t_is_test: BooleanBuilder,
    t_ids_lost: BooleanBuilder,
    t_value: Float64Builder,
}

/// One copy of a conversion as written to `conversions`.
struct Copy<'a> {
    event_id: Option<&'a str>,
    time: i64,
    origin: &'static str,
    ids: u8,
    click_id: Option<&'a str>,
}

impl ConversionRows {
    pub(crate) fn new(plaintext: bool) -> Self {
        ConversionRows {
            schema: table_schema(Table::Conversions, plaintext),
            truth_schema: table_schema(Table::Truth, plaintext),
            rows: 0,
            truth_rows: 0,
            advertiser_id: StringBuilder::new(),
            source_id: StringBuilder::new(),
            event_id: StringBuilder::new(),
            event_name: StringBuilder::new(),
            event_time: ts(),
            origin: StringBuilder::new(),
            action_source: StringBuilder::new(),
            id: Default::default(),
            click_id: StringBuilder::new(),
            device_os: StringBuilder::new(),
            geo_state: StringBuilder::new(),
            value: Float64Builder::new(),
            currency: StringBuilder::new(),
            order_id: StringBuilder::new(),
            is_test: BooleanBuilder::new(),
            opt_out: BooleanBuilder::new(),
            t_advertiser_id: StringBuilder::new(),
            t_source_id: StringBuilder::new(),
            t_event_id: StringBuilder::new(),
            t_order_id: StringBuilder::new(),
            t_event_time: ts(),
            t_channel: StringBuilder::new(),
            t_campaign: StringBuilder::new(),
            t_touch: StringBuilder::new(),
            t_in_server: BooleanBuilder::new(),
            t_in_browser: BooleanBuilder::new(),
            t_has_event_id: BooleanBuilder::new(),
            t_is_test: BooleanBuilder::new(),
            t_ids_lost: BooleanBuilder::new(),
            t_value: Float64Builder::new(),
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn truth_rows(&self) -> usize {
        self.truth_rows
    }

    /// Appends every copy of every conversion of `world`, and its truth row.
    pub(crate) fn push_user(
        &mut self,
        advertiser: &str,
        source: &str,
        cat: &Catalog,
        world: &UserWorld,
    ) {
        let p = &world.profile;
        for c in &world.conversions {
            let click_id = c.cause.and_then(|i| world.touches[i].click_id.as_deref());
            let event_id = c.has_event_id.then_some(c.event_id.as_str());
            let mut copies: [Option<Copy<'_>>; 2] = [None, None];
            if c.in_server {
                copies[0] = Some(Copy {
                    event_id,
                    time: c.time,
                    origin: "server",
                    ids: c.server_ids,
                    click_id: click_id.filter(|_| c.click_captured),
                });
            }
            if c.in_browser {
                copies[1] = Some(Copy {
                    event_id,
                    time: c.browser_time,
                    origin: "browser",
                    ids: if c.browser_em { EM } else { 0 },
                    click_id: click_id.filter(|_| c.browser_click),
                });
            }
            for copy in copies.iter().flatten() {
                self.rows += 1;
                self.advertiser_id.append_value(advertiser);
                self.source_id.append_value(source);
                self.event_id.append_option(copy.event_id);
                self.event_name.append_value("Purchase");
                self.event_time.append_value(copy.time);
                self.origin.append_value(copy.origin);
                self.action_source.append_value("website");
                for (k, bit) in [EM, PH, EXT].into_iter().enumerate() {
                    opt(&mut self.id[k], copy.ids & bit != 0, &p.ids[k]);
                }
                self.click_id.append_option(copy.click_id);
                self.device_os.append_value(DEVICES[p.device].0);
                self.geo_state.append_value(state_name(p.state));
                self.value.append_value(c.value);
                self.currency.append_value("USD");
                self.order_id.append_value(&c.order_id);
                self.is_test.append_value(c.is_test);
                self.opt_out.append_value(c.opt_out);
            }

            self.truth_rows += 1;
            self.t_advertiser_id.append_value(advertiser);
            self.t_source_id.append_value(source);
            self.t_event_id.append_option(event_id);
            self.t_order_id.append_value(&c.order_id);
            self.t_event_time.append_value(c.time);
            match c.cause {
                Some(i) => {
                    let touch = &world.touches[i];
                    let k = &cat.campaigns[usize::from(touch.campaign)];
                    self.t_channel.append_value(&cat.channels[k.channel].name);
                    self.t_campaign.append_value(&k.id);
                    self.t_touch.append_value(&touch.touch_id);
                }
                None => {
                    self.t_channel.append_null();
                    self.t_campaign.append_null();
                    self.t_touch.append_null();
                }
            }
            self.t_in_server.append_value(c.in_server);
            self.t_in_browser.append_value(c.in_browser);
            self.t_has_event_id.append_value(c.has_event_id);
            self.t_is_test.append_value(c.is_test);
            self.t_ids_lost.append_value(c.ids_lost);
            self.t_value.append_value(c.value);
        }
    }

    /// Takes the accumulated conversion rows as a batch.
    pub(crate) fn take(&mut self) -> Result<RecordBatch, Error> {
        self.rows = 0;
        let [id0, id1, id2] = &mut self.id;
        batch(
            &self.schema,
            vec![
                Arc::new(self.advertiser_id.finish()),
                Arc::new(self.source_id.finish()),
                Arc::new(self.event_id.finish()),
                Arc::new(self.event_name.finish()),
                Arc::new(self.event_time.finish()),
                Arc::new(self.origin.finish()),
                Arc::new(self.action_source.finish()),
                Arc::new(id0.finish()),
                Arc::new(id1.finish()),
                Arc::new(id2.finish()),
                Arc::new(self.click_id.finish()),
                Arc::new(self.device_os.finish()),
                Arc::new(self.geo_state.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.currency.finish()),
                Arc::new(self.order_id.finish()),
                Arc::new(self.is_test.finish()),
                Arc::new(self.opt_out.finish()),
            ],
        )
    }

    /// Takes the accumulated truth rows as a batch.
    pub(crate) fn take_truth(&mut self) -> Result<RecordBatch, Error> {
        self.truth_rows = 0;
        batch(
            &self.truth_schema,
            vec![
                Arc::new(self.t_advertiser_id.finish()),
                Arc::new(self.t_source_id.finish()),
                Arc::new(self.t_event_id.finish()),
                Arc::new(self.t_order_id.finish()),
                Arc::new(self.t_event_time.finish()),
                Arc::new(self.t_channel.finish()),
                Arc::new(self.t_campaign.finish()),
                Arc::new(self.t_touch.finish()),
                Arc::new(self.t_in_server.finish()),
                Arc::new(self.t_in_browser.finish()),
                Arc::new(self.t_has_event_id.finish()),
                Arc::new(self.t_is_test.finish()),
                Arc::new(self.t_ids_lost.finish()),
                Arc::new(self.t_value.finish()),
            ],
        )
    }
}

/// Touchpoint rows.
pub(crate) struct TouchRows {
    schema: SchemaRef,
    rows: usize,
    advertiser_id: StringBuilder,
    touch_id: StringBuilder,
    channel: StringBuilder,
    campaign_id: StringBuilder,
    adgroup_id: StringBuilder,
    ad_id: StringBuilder,
    touch_type: StringBuilder,
    touch_time: TimestampMicrosecondBuilder,
    id: [StringBuilder; 3],
    click_id: StringBuilder,
    device_os: StringBuilder,
    geo_state: StringBuilder,
    cost: Float64Builder,
}

impl TouchRows {
    pub(crate) fn new(plaintext: bool) -> Self {
        TouchRows {
            schema: table_schema(Table::Touchpoints, plaintext),
            rows: 0,
            advertiser_id: StringBuilder::new(),
            touch_id: StringBuilder::new(),
            channel: StringBuilder::new(),
            campaign_id: StringBuilder::new(),
            adgroup_id: StringBuilder::new(),
            ad_id: StringBuilder::new(),
            touch_type: StringBuilder::new(),
            touch_time: ts(),
            id: Default::default(),
            click_id: StringBuilder::new(),
            device_os: StringBuilder::new(),
            geo_state: StringBuilder::new(),
            cost: Float64Builder::new(),
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn push_user(&mut self, advertiser: &str, cat: &Catalog, world: &UserWorld) {
        let p = &world.profile;
        for t in &world.touches {
            self.rows += 1;
            let k = &cat.campaigns[usize::from(t.campaign)];
            self.advertiser_id.append_value(advertiser);
            self.touch_id.append_value(&t.touch_id);
            self.channel.append_value(&cat.channels[k.channel].name);
            self.campaign_id.append_value(&k.id);
            self.adgroup_id
                .append_value(&k.adgroup_ids[usize::from(t.adgroup)]);
            self.ad_id
                .append_value(&k.ad_ids[usize::from(t.adgroup)][usize::from(t.ad)]);
            self.touch_type
                .append_value(if t.click { "click" } else { "impression" });
            self.touch_time.append_value(t.time);
            for (i, bit) in [EM, PH, EXT].into_iter().enumerate() {
                opt(&mut self.id[i], t.ids & bit != 0, &p.ids[i]);
            }
            self.click_id.append_option(t.click_id.as_deref());
            self.device_os.append_value(DEVICES[p.device].0);
            self.geo_state.append_value(state_name(p.state));
            self.cost.append_value(t.cost);
        }
    }

    pub(crate) fn take(&mut self) -> Result<RecordBatch, Error> {
        self.rows = 0;
        let [id0, id1, id2] = &mut self.id;
        batch(
            &self.schema,
            vec![
                Arc::new(self.advertiser_id.finish()),
                Arc::new(self.touch_id.finish()),
                Arc::new(self.channel.finish()),
                Arc::new(self.campaign_id.finish()),
                Arc::new(self.adgroup_id.finish()),
                Arc::new(self.ad_id.finish()),
                Arc::new(self.touch_type.finish()),
                Arc::new(self.touch_time.finish()),
                Arc::new(id0.finish()),
                Arc::new(id1.finish()),
                Arc::new(id2.finish()),
                Arc::new(self.click_id.finish()),
                Arc::new(self.device_os.finish()),
                Arc::new(self.geo_state.finish()),
                Arc::new(self.cost.finish()),
            ],
        )
    }
}

/// Spend and baseline rows (small: campaigns × days per advertiser).
pub(crate) struct DailyRows {
    spend_schema: SchemaRef,
    baseline_schema: SchemaRef,
    s_advertiser_id: StringBuilder,
    s_channel: StringBuilder,
    s_campaign_id: StringBuilder,
    s_date: Date32Builder,
    s_spend: Float64Builder,
    s_impressions: Int64Builder,
    s_clicks: Int64Builder,
    s_currency: StringBuilder,
    b_advertiser_id: StringBuilder,
    b_channel: StringBuilder,
    b_campaign_id: StringBuilder,
    b_date: Date32Builder,
    b_conversions: Float64Builder,
    b_value: Float64Builder,
}

/// Days since 1970-01-01 (Arrow `Date32`).
fn date32(day: chrono::NaiveDate) -> i32 {
    (day - chrono::NaiveDate::default()).num_days() as i32
}

impl DailyRows {
    pub(crate) fn new() -> Self {
        DailyRows {
            spend_schema: table_schema(Table::Spend, false),
            baseline_schema: table_schema(Table::Baseline, false),
            s_advertiser_id: StringBuilder::new(),
            s_channel: StringBuilder::new(),
            s_campaign_id: StringBuilder::new(),
            s_date: Date32Builder::new(),
            s_spend: Float64Builder::new(),
            s_impressions: Int64Builder::new(),
            s_clicks: Int64Builder::new(),
            s_currency: StringBuilder::new(),
            b_advertiser_id: StringBuilder::new(),
            b_channel: StringBuilder::new(),
            b_campaign_id: StringBuilder::new(),
            b_date: Date32Builder::new(),
            b_conversions: Float64Builder::new(),
            b_value: Float64Builder::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_spend(
        &mut self,
        advertiser: &str,
        channel: &str,
        campaign: &str,
        day: chrono::NaiveDate,
        spend: f64,
        impressions: u64,
        clicks: u64,
    ) {
        self.s_advertiser_id.append_value(advertiser);
        self.s_channel.append_value(channel);
        self.s_campaign_id.append_value(campaign);
        self.s_date.append_value(date32(day));
        self.s_spend.append_value(spend);
        self.s_impressions.append_value(impressions as i64);
        self.s_clicks.append_value(clicks as i64);
        self.s_currency.append_value("USD");
    }

    pub(crate) fn push_baseline(
        &mut self,
        advertiser: &str,
        channel: &str,
        campaign: &str,
        day: chrono::NaiveDate,
        conversions: f64,
        value: f64,
    ) {
        self.b_advertiser_id.append_value(advertiser);
        self.b_channel.append_value(channel);
        self.b_campaign_id.append_value(campaign);
        self.b_date.append_value(date32(day));
        self.b_conversions.append_value(conversions);
        self.b_value.append_value(value);
    }

    pub(crate) fn take_spend(&mut self) -> Result<RecordBatch, Error> {
        batch(
            &self.spend_schema,
            vec![
                Arc::new(self.s_advertiser_id.finish()),
                Arc::new(self.s_channel.finish()),
                Arc::new(self.s_campaign_id.finish()),
                Arc::new(self.s_date.finish()),
                Arc::new(self.s_spend.finish()),
                Arc::new(self.s_impressions.finish()),
                Arc::new(self.s_clicks.finish()),
                Arc::new(self.s_currency.finish()),
            ],
        )
    }

    pub(crate) fn take_baseline(&mut self) -> Result<RecordBatch, Error> {
        batch(
            &self.baseline_schema,
            vec![
                Arc::new(self.b_advertiser_id.finish()),
                Arc::new(self.b_channel.finish()),
                Arc::new(self.b_campaign_id.finish()),
                Arc::new(self.b_date.finish()),
                Arc::new(self.b_conversions.finish()),
                Arc::new(self.b_value.finish()),
            ],
        )
    }
}

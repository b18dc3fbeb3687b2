//! The separation: after the cutover the treated channel loses identifiers, the control
//! channel does not, and true conversions keep happening.

use std::collections::HashMap;

use tally_sample::{Format, Table, WorldConfig, generate};

use crate::*;

/// Share of `channel`'s touchpoints carrying em, (pre, post) cutover.
fn em_share(tp: &RecordBatch, channel: &str, cutover_us: i64) -> (f64, f64) {
    let (ch, time, em) = (
        str_req(tp, "channel"),
        times(tp, "touch_time"),
        strs(tp, "em_sha256"),
    );
    let mut n = [0f64; 2];
    let mut with = [0f64; 2];
    for i in 0..tp.num_rows() {
        if ch[i] != channel {
            continue;
        }
        let post = usize::from(time[i] >= cutover_us);
        n[post] += 1.0;
        if em[i].is_some() {
            with[post] += 1.0;
        }
    }
    assert!(
        n[0] > 300.0 && n[1] > 300.0,
        "too few {channel} touches: {n:?}"
    );
    (with[0] / n[0], with[1] / n[1])
}

#[test]
fn treated_channel_loses_identifiers_control_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = WorldConfig::default();
    let summary = generate(&config, dir.path(), Format::Parquet).unwrap();
    let cutover_us = midnight_us(config.cutover);
    let tp = read(dir.path(), Table::Touchpoints, Format::Parquet, false);

    let (tt_pre, tt_post) = em_share(&tp, "tiktok", cutover_us);
    let (gg_pre, gg_post) = em_share(&tp, "google", cutover_us);
    assert!((0.78..0.92).contains(&tt_pre), "tiktok pre {tt_pre}");
    assert!(tt_post < 0.2, "tiktok post {tt_post}");
    assert!(
        (gg_pre - gg_post).abs() < 0.05,
        "google {gg_pre} -> {gg_post}"
    );

    // Click ids on conversions caused by TikTok clicks: mostly present before, rare after.
    let tr = read(dir.path(), Table::Truth, Format::Parquet, false);
    let cv = read(dir.path(), Table::Conversions, Format::Parquet, false);
    let touch_ids = str_req(&tp, "touch_id");
    let touches = index_by(&touch_ids);
    let (t_type, t_time) = (str_req(&tp, "touch_type"), times(&tp, "touch_time"));
    let mut server_click: HashMap<String, bool> = HashMap::new();
    let (c_order, c_origin, c_click) = (
        str_req(&cv, "order_id"),
        str_req(&cv, "origin"),
        strs(&cv, "click_id"),
    );
    for i in 0..cv.num_rows() {
        if c_origin[i] == "server" {
            server_click.insert(c_order[i].clone(), c_click[i].is_some());
        }
    }
    let (order, touch, channel, etime, ids_lost) = (
        str_req(&tr, "order_id"),
        strs(&tr, "true_touch_id"),
        strs(&tr, "true_channel"),
        times(&tr, "event_time"),
        bools(&tr, "ids_lost"),
    );
    let mut carried = [[0f64; 2]; 2]; // [post][carried]
    for i in 0..tr.num_rows() {
        assert!(
            !ids_lost[i] || etime[i] >= cutover_us,
            "ids_lost before the cutover: {}",
            order[i]
        );
        if channel[i].as_deref() != Some("tiktok") {
            continue;
        }
        let j = touches[touch[i].as_deref().unwrap()];
        let Some(&has) = server_click.get(&order[i]) else {
            continue;
        };
        if t_type[j] != "click" {
            continue;
        }
        carried[usize::from(t_time[j] >= cutover_us)][usize::from(has)] += 1.0;
    }
    let share = |c: [f64; 2]| c[1] / (c[0] + c[1]);
    assert!(
        share(carried[0]) > 0.5,
        "pre click-id share {:?}",
        carried[0]
    );
    assert!(
        share(carried[1]) < 0.3,
        "post click-id share {:?}",
        carried[1]
    );
    assert!(summary.ids_lost > 0);

    // The media still works: TikTok's true conversions per day do not collapse.
    let tt = summary.conversions_by_channel["tiktok"];
    let pre_days = (config.cutover - config.start).num_days() as f64;
    let post_days = f64::from(config.days) - pre_days;
    let (pre_rate, post_rate) = (tt.pre as f64 / pre_days, tt.post as f64 / post_days);
    assert!(
        post_rate > 0.5 * pre_rate,
        "tiktok true conversions/day {pre_rate} -> {post_rate}"
    );
}

#[test]
fn treated_platform_reporting_degrades() {
    let dir = tempfile::tempdir().unwrap();
    let config = WorldConfig {
        users: 4_000,
        ..WorldConfig::default()
    };
    let summary = generate(&config, dir.path(), Format::Parquet).unwrap();
    let cutover = (config.cutover - NaiveDate::default()).num_days() as i32;
    let bl = read(dir.path(), Table::Baseline, Format::Parquet, false);
    let (ch, date, conv) = (
        str_req(&bl, "channel"),
        dates(&bl, "date"),
        f64s(&bl, "conversions"),
    );
    // Baseline conversions per true conversion, pre vs post, for tiktok and google.
    let ratio = |name: &str| {
        let mut reported = [0.0; 2];
        for i in 0..bl.num_rows() {
            if ch[i] == name {
                reported[usize::from(date[i] >= cutover)] += conv[i];
            }
        }
        let truth = summary.conversions_by_channel[name];
        (
            reported[0] / truth.pre as f64,
            reported[1] / truth.post as f64,
        )
    };
    let (tt_pre, tt_post) = ratio("tiktok");
    let (gg_pre, gg_post) = ratio("google");
    assert!(
        tt_post < 0.85 * tt_pre,
        "tiktok baseline/truth {tt_pre} -> {tt_post}"
    );
    assert!(
        gg_post > 0.8 * gg_pre,
        "google baseline/truth {gg_pre} -> {gg_post}"
    );
}

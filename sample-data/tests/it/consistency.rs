//! The files agree with each other and with the ground truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tally_sample::{Format, Table, generate};

use crate::*;

#[test]
fn spend_equals_touchpoint_counts_and_costs() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&small(11), dir.path(), Format::Parquet).unwrap();
    let tp = read(dir.path(), Table::Touchpoints, Format::Parquet, false);
    let sp = read(dir.path(), Table::Spend, Format::Parquet, false);
    assert!(
        tp.num_rows() > 1_000,
        "too few touchpoints: {}",
        tp.num_rows()
    );

    // (campaign, date) -> (impressions, clicks, cost) from the touchpoints.
    let mut from_touches: BTreeMap<(String, i32), (i64, i64, f64)> = BTreeMap::new();
    let (camp, kind, time, cost) = (
        str_req(&tp, "campaign_id"),
        str_req(&tp, "touch_type"),
        times(&tp, "touch_time"),
        f64s(&tp, "cost"),
    );
    for i in 0..tp.num_rows() {
        let date = time[i].div_euclid(DAY_US) as i32;
        let e = from_touches.entry((camp[i].clone(), date)).or_default();
        match kind[i].as_str() {
            "impression" => e.0 += 1,
            "click" => e.1 += 1,
            other => panic!("touch_type {other}"),
        }
        e.2 += cost[i];
    }
    let (scamp, sdate, imps, clicks, spend) = (
        str_req(&sp, "campaign_id"),
        dates(&sp, "date"),
        i64s(&sp, "impressions"),
        i64s(&sp, "clicks"),
        f64s(&sp, "spend"),
    );
    let mut seen = BTreeSet::new();
    for i in 0..sp.num_rows() {
        let key = (scamp[i].clone(), sdate[i]);
        assert!(seen.insert(key.clone()), "two spend rows for {key:?}");
        let (ti, tc, tcost) = from_touches.get(&key).copied().unwrap_or_default();
        assert_eq!((imps[i], clicks[i]), (ti, tc), "counts of {key:?}");
        assert!(
            (spend[i] - tcost).abs() < 1e-6,
            "spend of {key:?}: {} vs {tcost}",
            spend[i]
        );
    }
    for key in from_touches.keys() {
        assert!(
            seen.contains(key),
            "touchpoints on {key:?} but no spend row"
        );
    }
    let total_imps: i64 = imps.iter().sum();
    let total_clicks: i64 = clicks.iter().sum();
    assert_eq!(
        (total_imps as u64, total_clicks as u64),
        (summary.impressions, summary.clicks)
    );
    assert!(total_clicks > 0 && spend.iter().sum::<f64>() > 0.0);
    assert!(str_req(&sp, "currency").iter().all(|c| c == "USD"));
}

#[test]
fn true_touches_exist_match_the_person_and_precede_the_conversion() {
    let dir = tempfile::tempdir().unwrap();
    generate(&small(12), dir.path(), Format::Parquet).unwrap();
    let tp = read(dir.path(), Table::Touchpoints, Format::Parquet, false);
    let cv = read(dir.path(), Table::Conversions, Format::Parquet, false);
    let tr = read(dir.path(), Table::Truth, Format::Parquet, false);

    let touch_ids = str_req(&tp, "touch_id");
    let touches = index_by(&touch_ids);
    let (t_channel, t_campaign, t_type, t_time, t_em, t_ph, t_os, t_geo, t_click) = (
        str_req(&tp, "channel"),
        str_req(&tp, "campaign_id"),
        str_req(&tp, "touch_type"),
        times(&tp, "touch_time"),
        strs(&tp, "em_sha256"),
        strs(&tp, "ph_sha256"),
        strs(&tp, "device_os"),
        strs(&tp, "geo_state"),
        strs(&tp, "click_id"),
    );
    // Conversion copies by order id.
    let c_order = str_req(&cv, "order_id");
    let mut copies: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, o) in c_order.iter().enumerate() {
        copies.entry(o.as_str()).or_default().push(i);
    }
    let (c_em, c_ph, c_os, c_geo, c_click, c_origin, c_time) = (
        strs(&cv, "em_sha256"),
        strs(&cv, "ph_sha256"),
        strs(&cv, "device_os"),
        strs(&cv, "geo_state"),
        strs(&cv, "click_id"),
        str_req(&cv, "origin"),
        times(&cv, "event_time"),
    );

    let (order, touch, channel, campaign, etime, in_server, in_browser) = (
        str_req(&tr, "order_id"),
        strs(&tr, "true_touch_id"),
        strs(&tr, "true_channel"),
        strs(&tr, "true_campaign_id"),
        times(&tr, "event_time"),
        bools(&tr, "in_server"),
        bools(&tr, "in_browser"),
    );
    index_by(&order); // order ids are unique
    let (mut causal, mut em_checked, mut clicks_carried) = (0, 0, 0);
    for i in 0..tr.num_rows() {
        let rows = copies
            .get(order[i].as_str())
            .expect("truth order in conversions");
        let origins: BTreeSet<&str> = rows.iter().map(|&r| c_origin[r].as_str()).collect();
        assert_eq!(origins.contains("server"), in_server[i], "{}", order[i]);
        assert_eq!(origins.contains("browser"), in_browser[i], "{}", order[i]);
        assert_eq!(rows.len(), origins.len(), "one copy per origin");
        // The truth time is the server copy's (or the browser copy's if browser-only).
        let first = rows
            .iter()
            .find(|&&r| c_origin[r] == "server")
            .or(rows.first())
            .unwrap();
        assert_eq!(c_time[*first], etime[i]);
        for &r in rows {
            assert!(c_time[r] >= etime[i], "browser copy before the true time");
        }

        let Some(tid) = &touch[i] else {
            assert!(channel[i].is_none() && campaign[i].is_none());
            continue;
        };
        causal += 1;
        let j = *touches
            .get(tid.as_str())
            .unwrap_or_else(|| panic!("true_touch_id {tid} not in touchpoints"));
        assert_eq!(Some(&t_channel[j]), channel[i].as_ref());
        assert_eq!(Some(&t_campaign[j]), campaign[i].as_ref());
        let age = etime[i] - t_time[j];
        assert!(age > 0, "touch after conversion {}", order[i]);
        let window = if t_type[j] == "click" {
            7 * DAY_US
        } else {
            DAY_US
        };
        assert!(
            age <= window,
            "{} touch {age} µs before conversion",
            t_type[j]
        );
        for &r in rows {
            assert_eq!(c_os[r], t_os[j]);
            assert_eq!(c_geo[r], t_geo[j]);
            if let (Some(a), Some(b)) = (&c_em[r], &t_em[j]) {
                assert_eq!(a, b, "em of {} differs from its touch's", order[i]);
                em_checked += 1;
            }
            if let (Some(a), Some(b)) = (&c_ph[r], &t_ph[j]) {
                assert_eq!(a, b);
            }
            if let Some(click) = &c_click[r] {
                assert_eq!(
                    Some(click),
                    t_click[j].as_ref(),
                    "conversion carries another click's id"
                );
                clicks_carried += 1;
            }
        }
    }
    assert!(causal > 40, "too few causal conversions: {causal}");
    assert!(
        em_checked > 20 && clicks_carried > 5,
        "{em_checked} {clicks_carried}"
    );
}

#[test]
fn world_json_counts_equal_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = WorldConfig {
        advertisers: vec!["acme".into(), "globex".into()],
        ..small(13)
    };
    let summary = generate(&config, dir.path(), Format::Jsonl).unwrap();
    let world = world_file(dir.path());
    assert_eq!(world.summary, summary);
    // (Floats in the config are not compared: JSON float parsing may differ by an ulp.)
    assert_eq!(
        (
            world.config.seed,
            world.config.users,
            &world.config.advertisers
        ),
        (config.seed, config.users, &config.advertisers)
    );
    assert_eq!(
        (world.config.start, world.config.cutover),
        (config.start, config.cutover)
    );
    assert_eq!(world.files["truth"], "truth/conversions.parquet");

    let cv = read(dir.path(), Table::Conversions, Format::Jsonl, false);
    let tr = read(dir.path(), Table::Truth, Format::Jsonl, false);
    assert_eq!(summary.rows.conversions as usize, cv.num_rows());
    assert_eq!(summary.rows.truth as usize, tr.num_rows());
    assert_eq!(
        summary.rows.touchpoints as usize,
        read(dir.path(), Table::Touchpoints, Format::Jsonl, false).num_rows()
    );
    assert_eq!(
        summary.rows.spend as usize,
        read(dir.path(), Table::Spend, Format::Jsonl, false).num_rows()
    );
    assert_eq!(
        summary.rows.baseline as usize,
        read(dir.path(), Table::Baseline, Format::Jsonl, false).num_rows()
    );

    // Group copies by (advertiser, event_id); no event_id ⇒ a lone server copy.
    let (adv, event, origin) = (
        str_req(&cv, "advertiser_id"),
        strs(&cv, "event_id"),
        str_req(&cv, "origin"),
    );
    let mut groups: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut no_event_id = 0u64;
    for i in 0..cv.num_rows() {
        match &event[i] {
            Some(e) => {
                groups
                    .entry((adv[i].clone(), e.clone()))
                    .or_default()
                    .insert(origin[i].clone());
            }
            None => {
                assert_eq!(origin[i], "server", "browser copy without event_id");
                no_event_id += 1;
            }
        }
    }
    let mut counts = (no_event_id, 0u64, 0u64);
    for origins in groups.values() {
        match (origins.contains("server"), origins.contains("browser")) {
            (true, false) => counts.0 += 1,
            (false, true) => counts.1 += 1,
            _ => counts.2 += 1,
        }
    }
    assert_eq!(
        counts,
        (summary.server_only, summary.browser_only, summary.both)
    );
    assert_eq!(no_event_id, summary.without_event_id);
    assert!(
        no_event_id > 0,
        "expected a few server copies without event_id"
    );
    assert!(summary.both > summary.server_only && summary.server_only > summary.browser_only);
    let has_event_id = bools(&tr, "has_event_id");
    assert_eq!(
        has_event_id.iter().filter(|h| !**h).count() as u64,
        no_event_id
    );
    let by_channel: u64 = summary
        .conversions_by_channel
        .values()
        .map(|p| p.pre + p.post)
        .sum();
    assert_eq!(by_channel, summary.causal_conversions);
    let tests = bools(&tr, "is_test").iter().filter(|t| **t).count() as u64;
    assert_eq!(tests, summary.test_conversions);
    assert_eq!(
        summary.causal_conversions + summary.organic_conversions + summary.test_conversions,
        summary.rows.truth
    );
    // Ids are unique across advertisers too.
    index_by(&str_req(&tr, "order_id"));
    index_by(&str_req(
        &read(dir.path(), Table::Touchpoints, Format::Jsonl, false),
        "touch_id",
    ));
    // Both advertisers are present with their own pixel.
    let sources: BTreeSet<String> = str_req(&cv, "source_id").into_iter().collect();
    assert_eq!(
        sources,
        BTreeSet::from(["px_acme_web".to_owned(), "px_globex_web".to_owned()])
    );
}

#[test]
fn end_at_cuts_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let end = NaiveDate::from_ymd_opt(2026, 8, 30)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    let config = WorldConfig {
        end_at: Some(end),
        ..small(14)
    };
    generate(&config, dir.path(), Format::Parquet).unwrap();
    let limit = end.timestamp_micros();
    let tp = read(dir.path(), Table::Touchpoints, Format::Parquet, false);
    let cv = read(dir.path(), Table::Conversions, Format::Parquet, false);
    assert!(times(&tp, "touch_time").iter().all(|t| *t < limit));
    assert!(times(&cv, "event_time").iter().all(|t| *t < limit));
    assert!(
        times(&tp, "touch_time")
            .iter()
            .any(|t| *t >= limit - DAY_US / 2)
    );
}

#[test]
fn invalid_config_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = WorldConfig {
        browser_copy_rate: 1.5,
        ..small(1)
    };
    let err = generate(&config, dir.path(), Format::Csv).unwrap_err();
    assert!(
        matches!(err, tally_sample::Error::InvalidConfig(_)),
        "{err}"
    );
    assert!(err.to_string().contains("browser_copy_rate"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

//! `tally attribute`: every rule of SPEC section 6 on hand-built fixtures, the DuckDB
//! cross-check on the sample world, and idempotent re-runs.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};

use crate::support::*;

/// Fixtures live on fixed dates; a policy with a long retention keeps them importable.
const POLICY: &str = "[policy]\njurisdiction = \"US\"\nplaintext_identifiers = \"hash\"\nk_anonymity = 50\n\
    [[policy.storage]]\nlocal = \"*\"\n[policy.retention]\nconversions = 36500\ntouchpoints = 36500\nspend = 36500\nbaseline = 36500\n";

/// The fixtures' reference instant: conversions happen at or after it.
fn base() -> DateTime<Utc> {
    "2026-08-10T12:00:00Z".parse().unwrap()
}

/// `base() + seconds`, as RFC 3339.
fn at(seconds: i64) -> String {
    (base() + Duration::seconds(seconds)).to_rfc3339()
}

const H: i64 = 3600;
const D: i64 = 24 * H;

/// A touch: id, channel, campaign, type, time offset (s), email, phone, external id, click id.
type Touch<'a> = (&'a str, &'a str, &'a str, &'a str, i64, &'a str, &'a str, &'a str, &'a str);
/// A conversion copy: event id, origin, time offset (s), email, phone, external id, click id, value, order id.
type Copy<'a> = (&'a str, &'a str, i64, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

fn scratch() -> Scratch {
    let s = Scratch::new();
    s.write("tally.toml", POLICY);
    s
}

fn load(s: &Scratch, advertiser: &str, touches: &[Touch<'_>], copies: &[Copy<'_>]) {
    let mut t = String::from("advertiser_id,touch_id,channel,campaign_id,touch_type,touch_time,email,phone,external_id,click_id\n");
    for (id, ch, camp, ty, off, em, ph, ext, ck) in touches {
        t.push_str(&format!("{advertiser},{id},{ch},{camp},{ty},{},{em},{ph},{ext},{ck}\n", at(*off)));
    }
    let mut c = String::from("advertiser_id,source_id,event_id,event_name,event_time,origin,email,phone,external_id,click_id,value,currency,order_id\n");
    for (ev, origin, off, em, ph, ext, ck, value, order) in copies {
        let currency = if value.is_empty() { "" } else { "USD" };
        c.push_str(&format!("{advertiser},px1,{ev},Purchase,{},{origin},{em},{ph},{ext},{ck},{value},{currency},{order}\n", at(*off)));
    }
    if !touches.is_empty() {
        let f = s.write(&format!("t-{advertiser}.csv"), &t);
        s.ok(&["import", "--strict", "touchpoints", f.to_str().unwrap()]);
    }
    if !copies.is_empty() {
        let f = s.write(&format!("c-{advertiser}.csv"), &c);
        s.ok(&["import", "--strict", "conversions", f.to_str().unwrap()]);
    }
}

fn strings(batches: &[RecordBatch], col: usize) -> Vec<String> {
    use datafusion::arrow::util::display::array_value_to_string;
    batches.iter().flat_map(|b| (0..b.num_rows()).map(move |r| array_value_to_string(b.column(col), r).unwrap())).collect()
}

fn floats(batches: &[RecordBatch], col: usize) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = cast(b.column(col), &DataType::Float64).unwrap();
            let c = c.as_primitive::<Float64Type>().clone();
            (0..c.len()).map(move |i| c.value(i))
        })
        .collect()
}

/// `(touch_id, credit)` of `model`, in path order.
fn credits(s: &Scratch, model: &str) -> Vec<(String, f64)> {
    let b = s.sql(&format!("select touch_id, credit from attributed_conversions where model = '{model}' order by conversion_key, touch_id"));
    strings(&b, 0).into_iter().zip(floats(&b, 1)).collect()
}

fn touch_ids(s: &Scratch, model: &str) -> Vec<String> {
    credits(s, model).into_iter().map(|(t, _)| t).collect()
}

#[test]
fn dedup_prefers_the_server_copy_and_fills_from_the_earliest_other_copy() {
    let s = scratch();
    load(
        &s,
        "acme",
        &[],
        &[
            // e1: browser first (em, click id, value), a second browser copy (phone), then the server copy.
            ("e1", "browser", 0, "ann@example.com", "", "", "ck1", "10.5", ""),
            ("e1", "browser", 30, "bob@example.com", "+1 650 555 1212", "", "ck-late", "99", ""),
            ("e1", "server", 60, "", "", "cust-1", "", "", "o1"),
            // e2: two server copies exactly 48 h apart: one conversion, the earliest server copy wins.
            ("e2", "server", D, "", "", "", "", "1", "o2"),
            ("e2", "server", D + 48 * H, "", "", "", "", "2", "o2b"),
            // e3: 48 h and one second apart: two conversions.
            ("e3", "server", D, "", "", "", "", "3", "o3"),
            ("e3", "server", D + 48 * H + 1, "", "", "", "", "4", "o3b"),
            // No event id: never deduplicated, even when identical.
            ("", "server", 2 * D, "", "", "", "", "5", "o5"),
            ("", "server", 2 * D, "", "", "", "", "5", "o5"),
        ],
    );
    let out = s.ok(&["attribute"]);
    assert!(out.contains("conversions: 9 copies → 6 distinct (3 duplicates merged; both 1, server 5)"), "{out}");
    let text = s.sql_text(
        "select event_id, origin, sources, cast(event_time as varchar) as t, em = (select em from conversions where event_id = 'e1' and value = 10.5) as em_from_first, \
         ph is not null as has_ph, external_id is not null as has_ext, click_id, value, order_id \
         from conversions_dedup order by event_id, event_time, order_id",
    );
    let want = "\
+----------+--------+---------+----------------------+---------------+--------+---------+----------+-------+----------+
| event_id | origin | sources | t                    | em_from_first | has_ph | has_ext | click_id | value | order_id |
+----------+--------+---------+----------------------+---------------+--------+---------+----------+-------+----------+
| e1       | server | both    | 2026-08-10T12:01:00Z | true          | true   | true    | ck1      | 10.5  | o1       |
| e2       | server | server  | 2026-08-11T12:00:00Z |               | false  | false   |          | 1.0   | o2       |
| e3       | server | server  | 2026-08-11T12:00:00Z |               | false  | false   |          | 3.0   | o3       |
| e3       | server | server  | 2026-08-13T12:00:01Z |               | false  | false   |          | 4.0   | o3b      |
|          | server | server  | 2026-08-12T12:00:00Z |               | false  | false   |          | 5.0   | o5       |
|          | server | server  | 2026-08-12T12:00:00Z |               | false  | false   |          | 5.0   | o5       |
+----------+--------+---------+----------------------+---------------+--------+---------+----------+-------+----------+";
    assert_eq!(text.trim(), want, "{text}");
    // Two identical copies without event id still get distinct keys.
    assert_eq!(scalar_i64(&s.sql("select count(distinct conversion_key) from conversions_dedup")), 6);
}

#[test]
fn test_events_are_excluded() {
    let s = scratch();
    let f = s.write(
        "c.csv",
        &format!(
            "advertiser_id,source_id,event_id,event_name,event_time,email,is_test\nacme,px1,e1,Purchase,{},a@example.com,true\nacme,px1,e2,Purchase,{},a@example.com,false\n",
            at(0),
            at(60)
        ),
    );
    s.ok(&["import", "conversions", f.to_str().unwrap()]);
    s.ok(&["attribute"]);
    assert_eq!(strings(&s.sql("select event_id from conversions_dedup"), 0), ["e2"]);
}

#[test]
fn click_and_view_windows_are_inclusive_at_their_edges() {
    let s = scratch();
    let a = "ann@example.com";
    load(
        &s,
        "acme",
        &[
            ("click_7d", "meta", "m1", "click", -7 * D, a, "", "", ""),
            ("click_7d_1s", "meta", "m1", "click", -7 * D - 1, a, "", "", ""),
            ("view_1d", "google", "g1", "impression", -D, a, "", "", ""),
            ("view_1d_1s", "google", "g1", "impression", -D - 1, a, "", "", ""),
            ("view_2d", "google", "g1", "impression", -2 * D, a, "", "", ""),
            ("click_at", "tiktok", "t1", "click", 0, a, "", "", ""),
            ("click_after", "tiktok", "t1", "click", 1, a, "", "", ""),
        ],
        &[("e1", "server", 0, a, "", "", "", "100", "o1")],
    );
    s.ok(&["attribute"]);
    assert_eq!(touch_ids(&s, "linear"), ["click_7d", "click_at", "view_1d"]);
    // The windows are options: a 2-day click window drops the 7-day click; a 3-day view window adds the 2-day view.
    s.ok(&["attribute", "--click-window", "2d", "--view-window", "3d"]);
    assert_eq!(touch_ids(&s, "linear"), ["click_at", "view_1d", "view_1d_1s", "view_2d"]);
}

#[test]
fn match_key_is_the_strongest_shared_identifier() {
    let s = scratch();
    let (a, p, x) = ("ann@example.com", "+1 650 555 1212", "cust-1");
    load(
        &s,
        "acme",
        &[
            ("t_click", "meta", "m1", "click", -4 * H, a, "", "", "ck1"),
            ("t_em", "meta", "m1", "click", -3 * H, a, p, "", ""),
            ("t_ph", "meta", "m1", "click", -2 * H, "", p, x, ""),
            ("t_ext", "meta", "m1", "click", -H, "", "", x, ""),
            ("t_none", "meta", "m1", "click", -H, "zed@example.com", "", "", "ck2"),
        ],
        &[("e1", "server", 0, a, p, x, "ck1", "", "o1")],
    );
    // The same person at another advertiser: identifiers never match across advertisers.
    load(&s, "globex", &[("g_em", "meta", "m1", "click", -H, a, "", "", "ck1")], &[]);
    let out = s.ok(&["attribute"]);
    assert!(out.contains("matched deterministically: 1 (strongest key: click_id 1, em 0, ph 0, external_id 0); no match: 0"), "{out}");
    let b = s.sql("select touch_id, match_key from attributed_conversions where model = 'linear' order by touch_id");
    let got: Vec<(String, String)> = strings(&b, 0).into_iter().zip(strings(&b, 1)).collect();
    let want = [("t_click", "click_id"), ("t_em", "em"), ("t_ext", "external_id"), ("t_ph", "ph")];
    assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
}

#[test]
fn path_order_breaks_time_ties_by_touch_id() {
    let s = scratch();
    let a = "ann@example.com";
    load(
        &s,
        "acme",
        &[("b", "meta", "m1", "click", -H, a, "", "", ""), ("a", "google", "g1", "click", -H, a, "", "", ""), ("c", "snap", "s1", "click", -H, a, "", "", "")],
        &[("e1", "server", 0, a, "", "", "", "", "o1")],
    );
    s.ok(&["attribute"]);
    assert_eq!(touch_ids(&s, "last_touch"), ["c"]);
    assert_eq!(touch_ids(&s, "first_touch"), ["a"]);
    assert_eq!(credits(&s, "position_based"), [("a".into(), 0.4), ("b".into(), 0.2), ("c".into(), 0.4)]);
}

#[test]
fn every_model_credits_sum_to_one_with_the_spec_formulas() {
    let s = scratch();
    let a = "ann@example.com";
    load(
        &s,
        "acme",
        &[
            ("t1", "meta", "m1", "click", -6 * D, a, "", "", ""),
            ("t2", "google", "g1", "click", -3 * D, a, "", "", ""),
            ("t3", "tiktok", "k1", "impression", -H, a, "", "", ""),
        ],
        &[("e1", "server", 0, a, "", "", "", "200", "o1")],
    );
    s.ok(&["attribute"]);
    let b = s.sql("select model, sum(credit), sum(value_credit), count(*) from attributed_conversions group by model order by model");
    let models = strings(&b, 0);
    assert_eq!(models, ["first_touch", "last_touch", "linear", "markov", "position_based", "time_decay"]);
    for (m, (c, v)) in models.iter().zip(floats(&b, 1).into_iter().zip(floats(&b, 2))) {
        assert!((c - 1.0).abs() < 1e-12, "{m}: credits sum to {c}");
        assert!((v - 200.0).abs() < 1e-9, "{m}: value credits sum to {v}");
    }
    // The latest *click* wins last touch even though an impression came later.
    assert_eq!(credits(&s, "last_touch"), [("t2".into(), 1.0)]);
    assert_eq!(credits(&s, "first_touch"), [("t1".into(), 1.0)]);
    assert_eq!(credits(&s, "position_based"), [("t1".into(), 0.4), ("t2".into(), 0.2), ("t3".into(), 0.4)]);
    let third = 1.0 / 3.0;
    assert!(credits(&s, "linear").iter().all(|(_, c)| (c - third).abs() < 1e-15));
    let w = [2f64.powf(-6.0 / 7.0), 2f64.powf(-3.0 / 7.0), 2f64.powf(-1.0 / (7.0 * 24.0))];
    let total: f64 = w.iter().sum();
    for ((_, got), w) in credits(&s, "time_decay").iter().zip(w) {
        assert!((got - w / total).abs() < 1e-12, "{got} vs {}", w / total);
    }
    // --half-life changes the decay; --models limits what is written.
    s.ok(&["attribute", "--models", "time_decay", "--half-life", "1d"]);
    assert_eq!(scalar_i64(&s.sql("select count(distinct model) from attributed_conversions")), 1);
    let w = [2f64.powf(-6.0), 2f64.powf(-3.0), 2f64.powf(-1.0 / 24.0)];
    let total: f64 = w.iter().sum();
    for ((_, got), w) in credits(&s, "time_decay").iter().zip(w) {
        assert!((got - w / total).abs() < 1e-12);
    }
}

/// The textbook example: paths C1>C2>C3 (converts), C1 (no), C2>C3 (no). Removal effects
/// 0.5, 1, 1 — channel shares 0.2, 0.4, 0.4 of the one conversion.
#[test]
fn markov_matches_the_textbook_removal_effects() {
    let s = scratch();
    let (a, b, c) = ("ann@example.com", "bob@example.com", "cy@example.com");
    load(
        &s,
        "acme",
        &[
            ("a1", "c1", "x1", "click", -3 * H, a, "", "", ""),
            ("a2", "c2", "x2", "click", -2 * H, a, "", "", ""),
            ("a3", "c3", "x3", "click", -H, a, "", "", ""),
            ("b1", "c1", "x1", "click", -3 * H, b, "", "", ""),
            ("c2", "c2", "x2", "click", -2 * H, c, "", "", ""),
            ("c3", "c3", "x3", "click", -H, c, "", "", ""),
        ],
        &[("e1", "server", 0, a, "", "", "", "10", "o1")],
    );
    let out = s.ok(&["attribute"]);
    assert!(out.contains("markov: 2 non-converting paths"), "{out}");
    assert!(out.contains("markov removal effects: acme/c1 0.500, acme/c2 1.000, acme/c3 1.000"), "{out}");
    let got = credits(&s, "markov");
    let want = [("a1", 0.2), ("a2", 0.4), ("a3", 0.4)];
    assert_eq!(got.len(), 3);
    for ((t, c), (wt, wc)) in got.iter().zip(want) {
        assert_eq!(t, wt);
        assert!((c - wc).abs() < 1e-12, "{t}: {c}");
    }
    // Deterministic: the same input gives bit-identical credits.
    s.ok(&["attribute"]);
    assert_eq!(credits(&s, "markov"), got);
}

#[test]
fn rerunning_a_window_replaces_its_output() {
    let s = scratch();
    let a = "ann@example.com";
    load(
        &s,
        "acme",
        &[("t1", "meta", "m1", "click", -H, a, "", "", ""), ("t2", "meta", "m1", "click", D - H, a, "", "", "")],
        &[("e1", "server", 0, a, "", "", "", "1", "o1"), ("e2", "server", D, a, "", "", "", "2", "o2")],
    );
    let count = |s: &Scratch| {
        (
            scalar_i64(&s.sql("select count(*) from conversions_dedup")),
            scalar_i64(&s.sql("select count(*) from attributed_conversions where model = 'last_touch'")),
        )
    };
    s.ok(&["attribute"]);
    assert_eq!(count(&s), (2, 2));
    let files = s.data_files().len();
    let out = s.ok(&["attribute"]);
    assert!(out.contains("replaced 4 earlier files"), "{out}");
    assert_eq!(count(&s), (2, 2));
    assert_eq!(s.data_files().len(), files);
    // One day only: the other day's output is untouched, that day's is replaced (not doubled).
    s.ok(&["attribute", "--from", "2026-08-11", "--to", "2026-08-11"]);
    assert_eq!(count(&s), (2, 2));
    // A new conversion that day shows up after re-running just that day.
    load(&s, "acme", &[], &[("e3", "server", D + H, a, "", "", "", "3", "o3")]);
    s.ok(&["attribute", "--from", "2026-08-11", "--to", "2026-08-11"]);
    assert_eq!(count(&s), (3, 3));
    assert_eq!(strings(&s.sql("select distinct cast(date as varchar) from attributed_conversions order by 1"), 0), ["2026-08-10", "2026-08-11"]);
}

#[test]
fn help_and_summary_describe_the_probabilistic_step() {
    let s = scratch();
    let help = s.ok(&["attribute", "--help"]);
    for flag in ["--from", "--to", "--models", "--click-window", "--view-window", "--half-life", "--memory-limit", "--no-probabilistic", "--holdout", "--cohort"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("docs/measurement.md"), "{help}");
    load(&s, "acme", &[], &[("e1", "server", 0, "", "", "", "", "", "o1")]);
    let out = s.ok(&["attribute", "--no-probabilistic"]);
    assert!(out.contains("probabilistic cohort attribution: skipped (--no-probabilistic)"), "{out}");
    assert!(out.contains("no match: 1"), "{out}");
    let bad = s.tally(&["attribute", "--from", "2026-08-12", "--to", "2026-08-11"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("`--to` 2026-08-11 is before `--from` 2026-08-12"), "{}", stderr(&bad));
}

/// The independent implementation: the same job as DuckDB SQL over the same stored Parquet
/// gives the same dedup rows, the same last/first touch per conversion, and the same
/// per-campaign credits (to 1e-9) for the heuristic models, on the generated sample world.
#[test]
fn duckdb_sql_agrees_on_the_sample_world() {
    let s = scratch();
    let world = s.path("world");
    s.ok(&["sample", "--out", world.to_str().unwrap()]);
    for table in ["touchpoints", "conversions"] {
        let f = world.join(format!("{table}.parquet"));
        s.ok(&["import", "--strict", table, f.to_str().unwrap()]);
    }
    // A small memory limit makes the run spill its journeys, which must not change anything.
    let out = s.ok(&["attribute", "--memory-limit", "1M"]);
    assert!(out.contains("steps spilled to disk"), "{out}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../attribution/benches/duckdb_attribution.py");
    let run = Command::new("python3").arg(&script).arg("--data").arg(s.data()).arg("--compare").output().expect("python3");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "DuckDB disagrees (or is missing: pip install -r tests/requirements.txt):\n{stdout}\n{}", stderr(&run));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let n = report["conversions_tally"].as_i64().unwrap();
    assert!(n > 500, "{report}");
    assert!(report["last_touch_conversions"].as_i64().unwrap() > n / 2, "{report}");
    for model in ["last_touch", "first_touch", "linear", "position_based", "time_decay"] {
        assert!(report["campaigns"][model].as_i64().unwrap() >= 10, "{report}");
        assert!(report["campaign_credit_max_abs_diff"][model].as_f64().unwrap() <= 1e-9, "{report}");
    }
}

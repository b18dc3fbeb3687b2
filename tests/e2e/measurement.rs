//! Measurement science (SPEC 6.5, 7, 8) on a generated world whose ground truth is known:
//! the probabilistic totals against the truth of the unmatched conversions, the holdout
//! self-validation, k-anonymity, client vs server counts, pre vs post, the report and the demo.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};

use crate::support::*;

fn policy(k: u32) -> String {
    format!(
        "[policy]\njurisdiction = \"US\"\nplaintext_identifiers = \"hash\"\nk_anonymity = {k}\n[[policy.storage]]\nlocal = \"*\"\n\
         [policy.retention]\nconversions = 36500\ntouchpoints = 36500\nspend = 36500\nbaseline = 36500\n"
    )
}

/// A scratch deployment with a generated world of `users` imported and attributed.
fn world(users: usize, k: u32) -> Scratch {
    let s = Scratch::new();
    s.write("tally.toml", &policy(k));
    let out = s.path("world");
    s.ok(&["sample", "--out", out.to_str().unwrap(), "--users", &users.to_string()]);
    for table in ["touchpoints", "conversions", "spend", "baseline"] {
        s.ok(&["import", "--strict", table, out.join(format!("{table}.parquet")).to_str().unwrap()]);
    }
    s
}

fn truth_sql(s: &Scratch, query: &str) -> Vec<RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ctx = tally_queries::session(&s.store()).await.unwrap();
        let truth = s.path("world/truth/conversions.parquet");
        ctx.register_parquet("truth", truth.to_str().unwrap(), Default::default()).await.unwrap();
        ctx.sql(query).await.unwrap().collect().await.unwrap()
    })
}

fn col_f64(b: &[RecordBatch], i: usize) -> Vec<f64> {
    b.iter().flat_map(|b| cast(b.column(i), &DataType::Float64).unwrap().as_primitive::<Float64Type>().iter().map(|v| v.unwrap_or(f64::NAN)).collect::<Vec<_>>()).collect()
}

fn col_str(b: &[RecordBatch], i: usize) -> Vec<String> {
    b.iter().flat_map(|b| cast(b.column(i), &DataType::Utf8).unwrap().as_string::<i32>().iter().map(|v| v.unwrap_or("NULL").to_owned()).collect::<Vec<_>>()).collect()
}

fn cutover(s: &Scratch) -> String {
    let world: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("world/truth/world.json")).unwrap()).unwrap();
    world["config"]["cutover"].as_str().unwrap().to_owned()
}

#[test]
fn measurement_on_the_sample_world_recovers_the_truth() {
    let s = world(20_000, 50);
    let out = s.ok(&["attribute"]);
    assert!(out.contains("probabilistic cohort attribution:"), "{out}");
    assert!(out.contains("self-validation on"), "{out}");

    // 1. Probabilistic totals against the truth: the unmatched conversions by true campaign.
    let b = truth_sql(
        &s,
        "with unmatched as (select order_id from conversions_dedup where conversion_key not in \
             (select conversion_key from attributed_conversions where method = 'deterministic')), \
         t as (select true_campaign_id as campaign_id, count(*) as n from unmatched join truth using (order_id) \
               where true_campaign_id is not null group by true_campaign_id) \
         select coalesce(p.campaign_id, t.campaign_id), coalesce(t.n, 0), coalesce(p.credit, 0), coalesce(p.credit_low, 0), coalesce(p.credit_high, 0) \
         from probabilistic_totals p full join t on p.campaign_id = t.campaign_id order by 1",
    );
    let (names, actual, credit, low, high) = (col_str(&b, 0), col_f64(&b, 1), col_f64(&b, 2), col_f64(&b, 3), col_f64(&b, 4));
    assert!(names.len() >= 10, "{names:?}");
    let err: f64 = actual.iter().zip(&credit).map(|(a, c)| (a - c).abs()).sum();
    let wape = err / actual.iter().sum::<f64>();
    let covered = (0..names.len()).filter(|&i| low[i] <= actual[i] && actual[i] <= high[i]).count();
    let coverage = covered as f64 / names.len() as f64;
    for i in 0..names.len() {
        println!("{:<22} truth {:>5}  modeled {:>7.1}  90% [{:>6.1}, {:>6.1}]", names[i], actual[i], credit[i], low[i], high[i]);
    }
    println!("external check: WAPE {:.1}%, 90% interval coverage {}/{} = {:.0}%", 100.0 * wape, covered, names.len(), 100.0 * coverage);
    // Issue #6 asks WAPE ≤ 15%; measured 11.3–11.5% (docs/measurement.md).
    assert!(wape <= 0.15, "probabilistic totals are off the truth: WAPE {wape:.3}");
    assert!((0.75..=1.0).contains(&coverage), "90% intervals cover too few campaigns: {coverage:.2}");

    // 2. The self-validation is populated and agrees with the external check.
    let v = s.sql("select predicted, actual, low, high, covered, wape, coverage, holdout from probabilistic_validation");
    let rows: usize = v.iter().map(RecordBatch::num_rows).sum();
    assert!(rows >= 10, "{rows} validation rows");
    let own_wape = col_f64(&v, 5)[0];
    let own_coverage = col_f64(&v, 6)[0];
    let holdout = col_f64(&v, 7)[0];
    println!("self-validation: WAPE {:.1}%, coverage {:.0}% on {holdout} held-out conversions", 100.0 * own_wape, 100.0 * own_coverage);
    let matched = scalar_i64(&s.sql("select count(distinct conversion_key) from attributed_conversions where method = 'deterministic'")) as f64;
    assert!((0.07..0.13).contains(&(holdout / matched)), "holdout {holdout} of {matched} matched");
    assert!((own_wape - wape).abs() <= 0.07, "self-validation WAPE {own_wape:.3} vs external {wape:.3}");
    assert!((own_coverage - coverage).abs() <= 0.2, "self-validation coverage {own_coverage:.2} vs external {coverage:.2}");
    // Predictions sum to the holdout (each held-out conversion is spread over campaigns).
    let predicted: f64 = col_f64(&v, 0).iter().sum();
    let actual_sum: f64 = col_f64(&v, 1).iter().sum();
    assert!((predicted - actual_sum).abs() / actual_sum < 0.1, "{predicted} vs {actual_sum}");

    // Probabilistic rows: SPEC 6.5's shape, and a conversion's credits sum to at most 1.
    let shape = s.sql_text(
        "select count(*) as bad from attributed_conversions where method = 'probabilistic' and \
         (model <> 'last_touch' or match_key <> 'cohort' or touch_id is not null or credit_low > credit or credit_high < credit or credit <= 0)",
    );
    assert!(shape.contains("| 0   |"), "{shape}");
    let over = scalar_i64(&s.sql(
        "select count(*) from (select conversion_key, sum(credit) c from attributed_conversions where method = 'probabilistic' \
         group by conversion_key) where c > 1.000001",
    ));
    assert_eq!(over, 0);
    let both = scalar_i64(&s.sql(
        "select count(*) from (select conversion_key from attributed_conversions group by conversion_key \
         having count(distinct method) > 1)",
    ));
    assert_eq!(both, 0, "a conversion has deterministic and probabilistic rows");

    // 3. Client vs server counts equal the generator's truth, day by day.
    let csv = s.ok(&["compare", "client-server", "--admin", "--format", "csv"]);
    assert!(csv.starts_with("advertiser_id,date,channel,campaign_id,server_only,browser_only,both,dedup_key_coverage,match_rate,attributed_server,baseline_conversions,discrepancy,p_value,flagged"), "{}", &csv[..200]);
    assert_eq!(scalar_i64(&s.sql("select count(*) from client_server")) as usize, csv.lines().count() - 1);
    let got = truth_sql(&s, "select cast(date as varchar) as d, sum(server_only), sum(browser_only), sum(both) from client_server group by 1 order by 1");
    let want = truth_sql(
        &s,
        "select cast(cast(event_time as date) as varchar), \
                sum(case when in_server and not in_browser then 1 else 0 end), \
                sum(case when in_browser and not in_server then 1 else 0 end), \
                sum(case when in_server and in_browser then 1 else 0 end) \
         from truth where not is_test group by 1 order by 1",
    );
    let table = |b: &[RecordBatch]| (0..4).map(|i| col_str(b, i)).collect::<Vec<_>>();
    assert_eq!(table(&got), table(&want), "client/server counts differ from the truth");
    let flagged = s.sql_text("select count(*) as n from client_server where flagged and (p_value >= 0.01 or p_value is null)");
    assert!(flagged.contains("| 0 |"), "{flagged}");

    // 4. Pre/post detects the injected loss on tiktok, not on the control, and the modeled
    //    total recovers most of the drop.
    let cut = cutover(&s);
    let report = s.path("report.html");
    let csv = s.ok(&["compare", "prepost", "--admin", "--cutover", &cut, "--control", "google", "--format", "csv", "--html", report.to_str().unwrap()]);
    let mut rows: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for l in lines {
        let cells: BTreeMap<String, String> = header.iter().map(|h| (*h).to_owned()).zip(l.split(',').map(str::to_owned)).collect();
        rows.insert((cells["channel"].clone(), cells["metric"].clone()), cells);
    }
    let num = |ch: &str, m: &str, c: &str| -> f64 { rows[&(ch.to_owned(), m.to_owned())][c].parse().unwrap_or(f64::NAN) };
    for need in ["pre_mean", "post_mean", "diff", "diff_low", "diff_high", "p_value", "did_vs_control", "did_low", "did_high"] {
        assert!(header.contains(&need), "{header:?}");
    }
    assert!(rows.contains_key(&("*".into(), "conversions".into())) && rows.contains_key(&("*".into(), "match_rate".into())));
    let p = num("tiktok", "attributed_deterministic", "p_value");
    assert!(p < 0.01, "tiktok drop not detected: p {p}");
    assert!(num("tiktok", "attributed_deterministic", "did_high") < 0.0, "DiD interval includes 0");
    assert!(num("google", "attributed_deterministic", "p_value") >= 0.01, "the control is flagged");
    let det_drop = num("tiktok", "attributed_deterministic", "diff");
    let total_drop = num("tiktok", "attributed_total", "diff");
    println!("tiktok: deterministic {det_drop:.2}/day, total {total_drop:.2}/day");
    assert!(total_drop.abs() < 0.5 * det_drop.abs(), "the modeled total does not recover most of the drop: {total_drop} vs {det_drop}");
    assert!(num("tiktok", "attributed_deterministic", "share_lost_identifiers") > 0.5);
    assert_eq!(scalar_i64(&s.sql("select count(*) from prepost")) as usize, rows.len());

    // 5. The report: self-contained HTML with inline SVG charts.
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.matches("<svg").count() >= 4, "{}", html.len());
    for external in ["src=", "href=", "<script", "<link", "url("] {
        assert!(!html.contains(external), "the report references an external asset ({external})");
    }
    assert!(html.contains(&format!("cutover {}", chrono::NaiveDate::parse_from_str(&cut, "%Y-%m-%d").unwrap().format("%b %-d"))));
}

#[test]
fn k_anonymity_merges_or_suppresses_small_cohorts() {
    // 2,000 people in 40 (state, device) cohorts: with k = 100 the small ones are merged.
    let s = world(2_000, 100);
    let out = s.ok(&["attribute"]);
    let line = out.lines().find(|l| l.starts_with("probabilistic cohort attribution:")).unwrap();
    let merged: usize = line.split(" cohorts merged").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(merged > 0, "{line}");
    assert!(scalar_i64(&s.sql("select count(*) from attributed_conversions where method = 'probabilistic'")) > 0);

    // k above the whole population: everything is suppressed, nothing probabilistic is written.
    s.write("tally.toml", &policy(1_000_000));
    let out = s.ok(&["attribute"]);
    let line = out.lines().find(|l| l.starts_with("probabilistic cohort attribution:")).unwrap();
    let unmatched: usize = line.split(" unmatched").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(unmatched > 0 && line.contains(&format!("{unmatched} in cohorts under the k-anonymity threshold suppressed")), "{line}");
    assert_eq!(scalar_i64(&s.sql("select count(*) from attributed_conversions where method = 'probabilistic'")), 0);

    // --no-probabilistic skips the step.
    s.write("tally.toml", &policy(50));
    let out = s.ok(&["attribute", "--no-probabilistic"]);
    assert!(out.contains("skipped (--no-probabilistic)"), "{out}");
    assert_eq!(scalar_i64(&s.sql("select count(*) from attributed_conversions where method = 'probabilistic'")), 0);
}

#[test]
fn compare_refuses_bad_input_with_one_line() {
    let s = world(300, 50);
    let before = s.tally(&["compare", "client-server", "--admin"]);
    assert!(!before.status.success() && stderr(&before).contains("run `tally attribute` first"), "{}", stderr(&before));
    s.ok(&["attribute"]);
    for (args, needle) in [
        (vec!["compare", "prepost", "--admin", "--cutover", "2030-01-01", "--control", "google"], "must leave at least two days"),
        (vec!["compare", "prepost", "--admin", "--cutover", "2026-09-15", "--control", "myspace"], "control channel `myspace`"),
        (vec!["compare", "prepost", "--admin", "--cutover", "yesterday", "--control", "google"], "invalid value"),
        (vec!["compare", "client-server", "--admin", "--from", "2026-09-10", "--to", "2026-09-01"], "is before"),
    ] {
        let out = s.tally(&args);
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn demo_posts_through_http_and_writes_the_report() {
    let s = Scratch::new();
    let out = s.ok(&["demo", "--users", "2000"]);
    for needle in ["1/6 generating", "3/6 posting through the HTTP API", "CAPI requests", "self-check", "6/6 writing the report", "Report: "] {
        assert!(out.contains(needle), "demo output lacks {needle:?}:\n{out}");
    }
    let report = out.lines().find_map(|l| l.strip_prefix("Report: ")).unwrap().trim().to_owned();
    let html = std::fs::read_to_string(Path::new(&report)).unwrap();
    assert!(html.contains("Key findings") && html.matches("<svg").count() >= 4);
    // Everything the world generated arrived through the API and was flushed.
    assert!(scalar_i64(&s.sql("select count(*) from touchpoints")) > 20_000);
    assert!(scalar_i64(&s.sql("select count(*) from conversions where origin = 'browser'")) > 100);
    for table in ["conversions_dedup", "attributed_conversions", "probabilistic_totals", "probabilistic_validation", "client_server", "prepost"] {
        let n = scalar_i64(&s.sql(&format!("select count(*) from {table}")));
        assert!(n > 0, "{table} is empty");
    }
    let tiktok = s.sql("select diff, p_value from prepost where channel = 'tiktok' and metric = 'attributed_deterministic'");
    assert!(col_f64(&tiktok, 0)[0] < 0.0, "the demo world's separation shows no drop");
}

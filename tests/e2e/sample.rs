//! The sample world: the committed sample is what the generator makes, and it loads whole.

use std::path::{Path, PathBuf};

use crate::support::*;

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-data/sample")
}

#[test]
fn committed_sample_is_what_the_generator_makes() {
    let s = Scratch::new();
    let out = s.path("world");
    s.ok(&["sample", "--out", out.to_str().unwrap()]);
    let ours: Vec<PathBuf> = walk(&committed()).into_iter().map(|p| p.strip_prefix(committed()).unwrap().to_path_buf()).collect();
    let fresh: Vec<PathBuf> = walk(&out).into_iter().map(|p| p.strip_prefix(&out).unwrap().to_path_buf()).collect();
    assert_eq!(ours, fresh, "regenerate with `tally sample --out sample-data/sample`");
    for f in &ours {
        assert!(std::fs::read(committed().join(f)).unwrap() == std::fs::read(out.join(f)).unwrap(), "{} differs: regenerate the committed sample", f.display());
    }
}

#[test]
fn committed_sample_loads_completely() {
    let s = Scratch::new();
    // The committed sample has fixed dates; a policy with a long retention keeps it loadable.
    s.write(
        "tally.toml",
        "[policy]\njurisdiction = \"US\"\nplaintext_identifiers = \"hash\"\nk_anonymity = 50\n[[policy.storage]]\nlocal = \"*\"\n\
         [policy.retention]\nconversions = 36500\ntouchpoints = 36500\nspend = 36500\nbaseline = 36500\n",
    );
    let world: serde_json::Value = serde_json::from_slice(&std::fs::read(committed().join("truth/world.json")).unwrap()).unwrap();
    let rows = &world["summary"]["rows"];
    for table in ["touchpoints", "conversions", "spend", "baseline"] {
        let file = committed().join(format!("{table}.parquet"));
        let out = s.ok(&["import", "--strict", table, file.to_str().unwrap()]);
        let n = rows[table].as_i64().unwrap();
        assert!(out.contains(&format!("imported {n} of {n} rows")), "{out}");
        assert_eq!(scalar_i64(&s.sql(&format!("select count(*) from {table}"))), n);
    }
    // Server-only / browser-only / both by event id, as the generator's truth counts them.
    let text = s.sql_text(
        "select sum(case when s > 0 and b = 0 then 1 else 0 end) as server_only, \
                sum(case when s = 0 and b > 0 then 1 else 0 end) as browser_only, \
                sum(case when s > 0 and b > 0 then 1 else 0 end) as both from \
         (select event_id, sum(case when origin = 'server' then 1 else 0 end) s, sum(case when origin = 'browser' then 1 else 0 end) b \
          from conversions where event_id is not null group by event_id)",
    );
    let summary = &world["summary"];
    let no_id = summary["without_event_id"].as_i64().unwrap();
    let want = [summary["server_only"].as_i64().unwrap() - no_id, summary["browser_only"].as_i64().unwrap(), summary["both"].as_i64().unwrap()];
    let got: Vec<i64> = text.lines().nth(3).unwrap().split('|').filter_map(|c| c.trim().parse().ok()).collect();
    assert_eq!(got, want, "{text}");
}

#[test]
fn demo_runs_and_reruns_cleanly() {
    let s = Scratch::new();
    let out = s.ok(&["demo", "--users", "300"]);
    for needle in ["1/6 generating a sample world", "3/6 posting through the HTTP API", "Report: ", "done in"] {
        assert!(out.contains(needle), "demo output lacks {needle:?}:\n{out}");
    }
    let touches = scalar_i64(&s.sql("select count(*) from touchpoints"));
    assert!(touches > 1000, "{touches}");
    // A second run replaces the first rather than adding to it (the world ends "now", so a
    // touch may fall in between the runs: compare against double, not for equality).
    s.ok(&["demo", "--users", "300"]);
    let again = scalar_i64(&s.sql("select count(*) from touchpoints"));
    assert!(again < touches * 3 / 2 && again * 3 / 2 > touches, "{touches} then {again}");
    // A directory the demo did not make is refused.
    let other = s.path("mine");
    std::fs::create_dir_all(other.join("conversions")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally")).args(["--data", other.to_str().unwrap(), "demo"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already holds data that the demo did not make"), "{}", stderr(&out));
}

//! `tally sql`, `tally report`, `tally pg` and the audit log: two advertisers in one store, and
//! everything `acme`'s key can reach shows `acme`'s rows only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// Fixtures live on fixed dates; a policy with a long retention keeps them importable.
const POLICY: &str = "[policy]\njurisdiction = \"US\"\nplaintext_identifiers = \"hash\"\nk_anonymity = 50\n\
    [[policy.storage]]\nlocal = \"*\"\n[policy.retention]\nconversions = 36500\ntouchpoints = 36500\nspend = 36500\nbaseline = 36500\n";

/// Two advertisers: acme (3 conversions, 3 touches) and globex (2 conversions, 2 touches), with
/// the same person and click ids in both, spend and baseline for both; attributed; one key each.
struct Two {
    s: Scratch,
    acme: String,
    globex: String,
}

fn two_advertisers() -> Two {
    let s = Scratch::new();
    s.write("tally.toml", POLICY);
    let touches = "advertiser_id,touch_id,channel,campaign_id,touch_type,touch_time,email,click_id\n\
        acme,a1,meta,m1,click,2026-08-10T10:00:00Z,ann@example.com,ck1\n\
        acme,a2,google,g1,impression,2026-08-10T11:00:00Z,ann@example.com,\n\
        acme,a3,meta,m1,click,2026-08-11T10:00:00Z,bob@example.com,ck2\n\
        globex,b1,tiktok,t1,click,2026-08-10T10:00:00Z,ann@example.com,ck1\n\
        globex,b2,tiktok,t1,click,2026-08-12T10:00:00Z,cy@example.com,ck9\n";
    let conversions = "advertiser_id,source_id,event_id,event_name,event_time,origin,email,click_id,value,currency\n\
        acme,px1,e1,Purchase,2026-08-10T12:00:00Z,server,ann@example.com,ck1,10,USD\n\
        acme,px1,e1,Purchase,2026-08-10T12:00:05Z,browser,ann@example.com,ck1,10,USD\n\
        acme,px1,e2,Purchase,2026-08-11T12:00:00Z,server,bob@example.com,,20,USD\n\
        globex,gx1,e1,Purchase,2026-08-10T12:00:00Z,server,ann@example.com,ck1,500,USD\n\
        globex,gx1,e9,Purchase,2026-08-12T12:00:00Z,server,cy@example.com,ck9,700,USD\n";
    let spend = "advertiser_id,channel,campaign_id,date,spend,impressions,clicks,currency\n\
        acme,meta,m1,2026-08-10,5,100,2,USD\nacme,google,g1,2026-08-10,3,50,0,USD\nglobex,tiktok,t1,2026-08-10,99,10,1,USD\n";
    let baseline = "advertiser_id,channel,campaign_id,date,conversions,value\nacme,meta,m1,2026-08-10,2,30\nglobex,tiktok,t1,2026-08-10,9,900\n";
    for (table, text) in [("touchpoints", touches), ("conversions", conversions), ("spend", spend), ("baseline", baseline)] {
        let f = s.write(&format!("{table}.csv"), text);
        s.ok(&["import", "--strict", table, f.to_str().unwrap()]);
    }
    s.ok(&["attribute"]);
    let acme = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let globex = s.ok(&["keys", "create", "--advertiser", "globex", "--source", "gx1"]).trim().to_owned();
    Two { s, acme, globex }
}

const TABLES: [&str; 6] = ["conversions", "touchpoints", "spend", "baseline", "conversions_dedup", "attributed_conversions"];

fn csv_lines(out: &str) -> Vec<String> {
    out.lines().skip(1).map(str::to_owned).collect()
}

#[test]
fn an_advertiser_key_reaches_its_own_rows_only() {
    let t = two_advertisers();
    let sql = |key: &str, q: &str| t.s.ok(&["sql", "--key", key, "--format", "csv", q]);
    // Every table: acme's key counts acme's rows; the admin counts both.
    for table in TABLES {
        let q = format!("select count(*) as n, count(distinct advertiser_id) as a, min(advertiser_id) as id from {table}");
        let mine = csv_lines(&sql(&t.acme, &q));
        assert!(mine[0].ends_with(",1,acme"), "{table}: {mine:?}");
        let theirs = csv_lines(&sql(&t.globex, &q));
        assert!(theirs[0].ends_with(",1,globex"), "{table}: {theirs:?}");
        let all = csv_lines(&t.s.ok(&["sql", "--admin", "--format", "csv", &q]));
        let n = |rows: &[String]| rows[0].split(',').next().unwrap().parse::<i64>().unwrap();
        assert_eq!(n(&all), n(&mine) + n(&theirs), "{table}");
        assert!(all[0].contains(",2,"), "{table}: {all:?}");
    }
    // Attempts through filters, joins, UNION and information_schema find nothing of globex.
    let probes = [
        "select count(*) from conversions where advertiser_id = 'globex'",
        "select count(*) from conversions where value >= 500",
        "select count(*) from touchpoints t join conversions c on t.click_id = c.click_id where t.channel = 'tiktok'",
        "select count(*) from (select advertiser_id from spend union select advertiser_id from baseline union select 'acme') where advertiser_id <> 'acme'",
        "select count(*) from information_schema.tables where table_name like '%globex%' or table_schema not in ('public', 'information_schema')",
    ];
    for q in probes {
        assert_eq!(csv_lines(&sql(&t.acme, q)), ["0"], "{q}");
    }
    // Files, DDL and COPY are refused with a one-line reason; nothing is written.
    let data = t.s.data();
    let globex_dir = data.join("conversions/advertiser_id=globex");
    let refused = [
        format!("create external table x stored as parquet location '{}'", globex_dir.display()),
        format!("copy (select * from conversions) to '{}'", t.s.path("leak.parquet").display()),
        format!("select * from '{}'", globex_dir.display()),
        "select * from read_parquet('x.parquet')".to_owned(),
        "set datafusion.execution.target_partitions = 1".to_owned(),
    ];
    for q in &refused {
        let out = t.s.tally(&["sql", "--key", &t.acme, q]);
        assert!(!out.status.success(), "{q}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!t.s.path("leak.parquet").exists());
    let out = t.s.tally(&["sql", "--key", &t.acme, "select * from conversion"]);
    assert!(stderr(&out).contains("the tables are: attributed_conversions, baseline, conversions, conversions_dedup, spend, touchpoints"), "{}", stderr(&out));
    // Without a reader, and with a revoked or made-up key, nothing runs.
    let out = t.s.tally(&["sql", "select 1"]);
    assert!(stderr(&out).contains("--key KEY") && !out.status.success(), "{}", stderr(&out));
    let out = t.s.tally(&["sql", "--key", "tally_nope", "select 1"]);
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
}

#[test]
fn compare_with_a_key_shows_and_replaces_that_advertisers_rows_only() {
    let t = two_advertisers();
    let compare = |key: &str| csv_lines(&t.s.ok(&["compare", "client-server", "--key", key, "--format", "csv"]));
    let acme = compare(&t.acme);
    assert!(!acme.is_empty() && acme.iter().all(|r| r.starts_with("acme,")), "{acme:?}");
    let globex = compare(&t.globex);
    assert!(!globex.is_empty() && globex.iter().all(|r| r.starts_with("globex,")), "{globex:?}");
    // globex's run replaced globex's stored rows and left acme's: the operator sees both.
    let stored = |who: &str| {
        let q = format!("select count(*) from client_server where advertiser_id = '{who}'");
        csv_lines(&t.s.ok(&["sql", "--admin", "--format", "csv", &q]))[0].parse::<usize>().unwrap()
    };
    assert_eq!((stored("acme"), stored("globex")), (acme.len(), globex.len()));
    // Re-running acme's replaces acme's rows, not adds to them.
    compare(&t.acme);
    assert_eq!(stored("acme"), acme.len());
    // The HTML report of a key holder names none of the other advertiser's campaigns.
    let report = t.s.path("acme.html");
    t.s.ok(&["compare", "client-server", "--key", &t.acme, "--html", report.to_str().unwrap()]);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("meta") && !html.to_lowercase().contains("tiktok"), "acme's report shows acme's channels only");
    // No reader, no comparison; each run is audited.
    let out = t.s.tally(&["compare", "client-server"]);
    assert!(!out.status.success() && stderr(&out).contains("--key KEY"), "{}", stderr(&out));
    let log = std::fs::read_to_string(t.s.data().join("_tally/audit.log")).unwrap();
    assert!(log.contains("\"compare\":\"client-server\""), "{log}");
}

#[test]
fn reports_list_run_and_export_for_the_key_holder_only() {
    let t = two_advertisers();
    let list = t.s.ok(&["report", "--list"]);
    let names = ["campaign_roas", "channel_performance", "daily_conversions_by_source", "match_quality", "path_length_distribution", "top_conversion_paths"];
    for name in names {
        assert!(list.contains(name), "{list}");
    }
    for name in names {
        let out = t.s.ok(&["report", name, "--key", &t.acme, "--format", "csv"]);
        let rows = csv_lines(&out);
        assert!(!rows.is_empty(), "{name}: {out}");
        assert!(rows.iter().all(|r| r.starts_with("acme,")), "{name}: {out}");
    }
    let roas = t.s.ok(&["report", "campaign_roas", "--key", &t.acme, "--format", "json", "--param", "from=2026-08-10", "--param", "to=2026-08-10"]);
    let rows: serde_json::Value = serde_json::from_str(&roas).unwrap();
    let meta = rows.as_array().unwrap().iter().find(|r| r["campaign_id"] == "m1").unwrap();
    assert_eq!(meta["spend"], 5.0, "{roas}");
    assert_eq!(meta["value"], 10.0, "{roas}");
    assert_eq!(meta["roas"], 2.0, "{roas}");
    let out = t.s.tally(&["report", "campaign_roas", "--key", &t.acme, "--param", "form=2026-08-01"]);
    assert!(stderr(&out).contains("no parameter `form`"), "{}", stderr(&out));
    // --output writes Parquet (identifiers stay binary there) and is audited as an export.
    let file = t.s.path("mine.parquet");
    t.s.ok(&["sql", "--key", &t.acme, "--output", file.to_str().unwrap(), "select advertiser_id, em from conversions"]);
    let (batches, _) = tally_core::store::read_parquet_file(&file).unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    assert_eq!(batches[0].schema().field(1).data_type(), &arrow::datatypes::DataType::FixedSizeBinary(32));
    let log = std::fs::read_to_string(t.s.data().join("_tally/audit.log")).unwrap();
    assert!(log.contains("\"action\":\"export\""), "{log}");
    assert!(log.contains("\"report\":\"campaign_roas\""), "{log}");
}

#[test]
fn the_audit_log_chains_every_query_and_key_change_and_verify_finds_tampering() {
    let t = two_advertisers();
    t.s.ok(&["sql", "--key", &t.acme, "select count(*) from conversions"]);
    t.s.ok(&["sql", "--admin", "select count(*) from spend"]);
    let id = t.s.ok(&["keys", "list"]).lines().find(|l| l.contains("globex")).unwrap().split_whitespace().next().unwrap().to_owned();
    t.s.ok(&["keys", "revoke", &id]);
    let path = t.s.data().join("_tally/audit.log");
    let log = std::fs::read_to_string(&path).unwrap();
    let actions: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary: Vec<(String, String)> = actions.iter().map(|e| (e["actor"].as_str().unwrap().to_owned(), e["action"].as_str().unwrap().to_owned())).collect();
    let want = [("admin", "key_create"), ("admin", "key_create"), ("advertiser:acme", "query"), ("admin", "query"), ("admin", "key_revoke")];
    assert_eq!(summary, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    assert!(!log.contains("select count"), "SQL text is not logged, only its hash");
    assert!(!log.contains(&t.acme) && !log.contains(&t.globex), "keys never reach the log");
    let out = t.s.ok(&["verify"]);
    assert!(out.contains("audit log: 5 entries, chain intact"), "{out}");
    // The revoked key no longer reads.
    assert!(stderr(&t.s.tally(&["sql", "--key", &t.globex, "select 1"])).contains("unauthorized"));
    // Alter the third entry (acme's query becomes globex's): verify names it.
    std::fs::write(&path, log.replacen("advertiser:acme", "advertiser:globex", 1)).unwrap();
    let out = t.s.tally(&["verify"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("broken at entry 2 (line 3)") && stderr(&out).contains("altered"), "{}", stderr(&out));
    // Remove an entry instead: the next one no longer links.
    let lines: Vec<&str> = log.lines().collect();
    std::fs::write(&path, [lines[0], lines[1], lines[3], lines[4]].join("\n") + "\n").unwrap();
    let out = t.s.tally(&["verify"]);
    assert!(stderr(&out).contains("broken at entry 2 (line 3)"), "{}", stderr(&out));
}

/// A running `tally pg` (or `tally serve --pg`).
struct Pg {
    child: Child,
    port: String,
}

impl Pg {
    fn start(s: &Scratch, args: &[&str], line_prefix: &str) -> Pg {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["--data", s.data().to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tally");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "tally exited before announcing the endpoint");
            if let Some(addr) = line.trim().strip_prefix(line_prefix) {
                break addr.to_owned();
            }
        };
        let port = addr.rsplit(':').next().unwrap().to_owned();
        Pg { child, port }
    }

    fn psql(&self, user: &str, password: &str, sql: &str) -> std::process::Output {
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port, "-U", user, "-d", "tally", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("run psql")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn psql_and_psycopg_see_the_key_holders_rows_only() {
    let t = two_advertisers();
    let pg = Pg::start(&t.s, &["pg", "--listen", "127.0.0.1:0"], "postgres endpoint listening on ");
    let ok = |user: &str, key: &str, sql: &str| {
        let out = pg.psql(user, key, sql);
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    // The command from the issue.
    assert_eq!(ok("acme", &t.acme, "select count(*) from conversions"), "3");
    assert_eq!(ok("globex", &t.globex, "select count(*) from conversions"), "2");
    for table in TABLES {
        assert_eq!(ok("acme", &t.acme, &format!("select concat(count(distinct advertiser_id), ':', min(advertiser_id)) from {table}")), "1:acme", "{table}");
    }
    assert_eq!(ok("acme", &t.acme, "select count(*) from conversions c join touchpoints t on t.click_id = c.click_id where c.value >= 500"), "0");
    assert_eq!(ok("acme", &t.acme, "select count(*) from (select advertiser_id from conversions union all select advertiser_id from spend) where advertiser_id = 'globex'"), "0");
    assert_eq!(ok("acme", &t.acme, "select count(*) from information_schema.tables where table_name like '%globex%'"), "0");
    // Identifiers travel as bytea; hex_id shows them as text.
    assert_eq!(ok("acme", &t.acme, "select length(hex_id(em)) from conversions where event_id = 'e2'"), "64");
    // Wrong key, another advertiser's key, DDL, COPY and file functions fail.
    for (user, key) in [("acme", "tally_wrong"), ("acme", t.globex.as_str()), ("globex", t.acme.as_str())] {
        let out = pg.psql(user, key, "select 1");
        assert!(!out.status.success(), "{user} logged in with a bad key");
        assert!(stderr(&out).to_lowercase().contains("password"), "{}", stderr(&out));
    }
    let refused = [
        format!("create external table x stored as parquet location '{}'", t.s.data().join("conversions/advertiser_id=globex").display()),
        "create table x as select * from conversions".to_owned(),
        "copy (select * from conversions) to '/tmp/tally-leak.csv'".to_owned(),
        "select * from read_parquet('/tmp/x.parquet')".to_owned(),
        "set datafusion.execution.target_partitions = 1".to_owned(),
    ];
    for sql in &refused {
        let out = pg.psql("acme", &t.acme, sql);
        assert!(!out.status.success(), "{sql} ran: {}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(!std::path::Path::new("/tmp/tally-leak.csv").exists());
    // Python's psycopg (extended protocol, server-side parameters).
    let script = "import sys, psycopg\n\
        with psycopg.connect(host='127.0.0.1', port=int(sys.argv[1]), user=sys.argv[2], password=sys.argv[3], dbname='tally', autocommit=True) as c:\n\
        \x20   n = c.execute('select count(*) from conversions where event_name = %s', ('Purchase',)).fetchone()[0]\n\
        \x20   ids = c.execute('select distinct advertiser_id from touchpoints').fetchall()\n\
        \x20   print(n, ','.join(r[0] for r in ids))\n";
    let py = |user: &str, key: &str| Command::new("python3").args(["-c", script, &pg.port, user, key]).output().expect("python3");
    let out = py("acme", &t.acme);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3 acme");
    let out = py("globex", &t.acme);
    assert!(!out.status.success(), "psycopg logged in as globex with acme's key");
    // Every statement that ran went to the audit log as acme's.
    let log = std::fs::read_to_string(t.s.data().join("_tally/audit.log")).unwrap();
    assert!(log.lines().filter(|l| l.contains("\"via\":\"pg\"") && l.contains("advertiser:acme")).count() >= 10, "{log}");
    assert!(t.s.ok(&["verify"]).contains("chain intact"));
}

#[test]
fn serve_with_pg_answers_sql_beside_the_api() {
    let t = two_advertisers();
    let pg = Pg::start(&t.s, &["serve", "--listen", "127.0.0.1:0", "--pg", "127.0.0.1:0"], "postgres endpoint listening on ");
    let out = pg.psql("acme", &t.acme, "select count(*) from conversions");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
}

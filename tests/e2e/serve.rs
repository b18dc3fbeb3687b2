//! `tally serve`: real processes, real HTTP, SIGKILL under load.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::support::*;

/// A running `tally serve`.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    fn start(s: &Scratch) -> Served {
        Served::start_with(s, &[])
    }

    fn start_with(s: &Scratch, extra: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .current_dir(s.dir.path())
            .env_remove("TALLY_CONFIG")
            .args(["--data", s.data().to_str().unwrap(), "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tally serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("read the address");
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("unexpected first line {line:?}")).to_owned();
        Served { child, addr }
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap()
    }
}

/// A failing test must not leave its server running.
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 POST; returns (status, body).
fn post(addr: &str, path: &str, key: &str, body: &str) -> std::io::Result<(u16, String)> {
    post_raw(addr, path, key, body).map(|(status, _, body)| (status, body))
}

/// A minimal HTTP/1.1 POST; returns (status, head, body).
fn post_raw(addr: &str, path: &str, key: &str, body: &str) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other("no status line"))?;
    let (head, body) = response.split_once("\r\n\r\n").map(|(h, b)| (h.to_owned(), b.to_owned())).unwrap_or_default();
    Ok((status, head, body))
}

/// What is left in the write-ahead log's directory.
fn wal_files(s: &Scratch) -> Vec<String> {
    walk(&s.data().join("_tally/wal")).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

/// Segment numbers name the Parquet files a segment is flushed to, so a restart after a clean
/// stop (which leaves no segment behind) must not start numbering again: it would replace the
/// earlier run's files, losing acknowledged events.
#[test]
fn restarts_after_clean_stops_keep_every_earlier_event() {
    let s = Scratch::new();
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let when = recent(1, 15);
    for run in 0..3 {
        let server = Served::start(&s);
        let body = format!("[{}]", (0..4).map(|i| event_json(&format!("run{run}-{i}"), &when)).collect::<Vec<_>>().join(","));
        assert_eq!(post(&server.addr, "/v1/events", &key, &body).unwrap().0, 200);
        assert!(server.terminate().success());
    }
    assert_eq!(scalar_i64(&s.sql("select count(distinct event_id) from conversions where event_id like 'run%'")), 12);
}

/// A second server on the same data directory is refused with a clear message (it would share
/// the first one's write-ahead log); the first keeps serving, and once it has stopped the
/// directory can be served again.
#[test]
fn a_second_server_on_one_data_directory_is_refused() {
    let s = Scratch::new();
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let when = recent(1, 15);
    let first = Served::start(&s);
    let second = s.tally(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!second.status.success(), "the second server must not run");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another `tally serve` is running on this data directory"), "{stderr}");
    assert_eq!(post(&first.addr, "/v1/events", &key, &format!("[{}]", event_json("first", &when))).unwrap().0, 200, "the first still serves");
    assert!(first.terminate().success());
    let again = Served::start(&s);
    assert_eq!(post(&again.addr, "/v1/events", &key, &format!("[{}]", event_json("again", &when))).unwrap().0, 200);
    assert!(again.terminate().success());
    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions where event_id in ('first', 'again')")), 2);
}

/// A flush cut short by a kill leaves its in-progress copy (`.wal-<node>-….parquet.tmp`) in a
/// partition directory; the next start of that node removes it (the segment is flushed again
/// from the log). Another writer's temporary file — an import's, which may be in progress — stays.
#[test]
fn a_restart_removes_the_dead_flush_files_of_its_node_only() {
    let s = Scratch::new();
    s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]);
    assert!(Served::start(&s).terminate().success());
    let node = std::fs::read_to_string(s.data().join("_tally/node-id")).unwrap().trim().to_owned();
    let dir = s.data().join("conversions/advertiser_id=acme/date=2026-01-02");
    std::fs::create_dir_all(&dir).unwrap();
    let dead = dir.join(format!(".wal-{node}-000000000007-0001.parquet.tmp"));
    let foreign = [dir.join(".part-1700000000000000-42-000001-abcdef.parquet.tmp"), dir.join(".wal-0badcafe-000000000007-0001.parquet.tmp")];
    for f in foreign.iter().chain([&dead]) {
        std::fs::write(f, b"PAR1 half a file").unwrap();
    }
    assert!(Served::start(&s).terminate().success());
    assert!(!dead.exists(), "this node's dead flush file is removed");
    for f in &foreign {
        assert!(f.exists(), "{} is not this node's and stays", f.display());
    }
}

fn event_json(id: &str, when: &str) -> String {
    format!(r#"{{"source_id":"px1","event_id":"{id}","event_name":"Purchase","event_time":"{when}","em":"{id}@example.com","value":5,"currency":"USD"}}"#)
}

#[test]
fn native_endpoints_answer_per_row_and_store_after_shutdown() {
    let s = Scratch::new();
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let other = s.ok(&["keys", "create", "--advertiser", "globex", "--source", "px9"]).trim().to_owned();
    let server = Served::start(&s);
    let when = recent(1, 10);
    let body = format!("[{},{},{}]", event_json("a1", &when), event_json("a2", "not a time"), event_json("a3", &when).replace("px1", "px9"));
    let (status, text) = post(&server.addr, "/v1/events", &key, &body).unwrap();
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["rejected"][0]["index"], 1);
    assert!(v["rejected"][0]["error"].as_str().unwrap().contains("`event_time`"), "{text}");
    assert_eq!(v["rejected"][1]["index"], 2);
    assert!(v["rejected"][1]["error"].as_str().unwrap().contains("source `px9` is not one this key may write to"), "{text}");

    // Another tenant's key cannot write to acme's source either; an unknown key is 401.
    let (status, text) = post(&server.addr, "/v1/events", &other, &format!("[{}]", event_json("g1", &when))).unwrap();
    assert_eq!((status, serde_json::from_str::<serde_json::Value>(&text).unwrap()["accepted"].as_i64()), (200, Some(0)), "{text}");
    assert_eq!(post(&server.addr, "/v1/events", "tally_nope", "[]").unwrap().0, 401);
    // Malformed bodies are 400 with a reason, never 500.
    let (status, text) = post(&server.addr, "/v1/touchpoints", &key, r#"[{"touch_id":"t"}]"#).unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("missing required column"), "{text}");

    // NDJSON touchpoints.
    let ndjson = format!("{{\"touch_id\":\"t1\",\"channel\":\"meta\",\"campaign_id\":\"c\",\"touch_type\":\"click\",\"touch_time\":\"{when}\",\"em\":\"a1@example.com\"}}\n");
    assert_eq!(post(&server.addr, "/v1/touchpoints", &key, &ndjson).unwrap().0, 200);

    assert!(server.terminate().success(), "graceful shutdown exits 0");
    assert_eq!(wal_files(&s), ["LOCK", "last-seq"], "the WAL is flushed and retired on shutdown");
    assert_eq!(s.sql_text("select event_id, advertiser_id from conversions").lines().filter(|l| l.contains("a1") && l.contains("acme")).count(), 1);
    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions")), 1);
    assert_eq!(scalar_i64(&s.sql("select count(*) from touchpoints where em is not null")), 1);
}

#[test]
fn oversize_bodies_get_413_and_a_busy_key_gets_429() {
    let s = Scratch::new();
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let server = Served::start_with(&s, &["--max-body-bytes", "2000", "--rate-per-key", "1"]);
    let when = recent(1, 9);
    let big = format!("[{}]", (0..40).map(|i| event_json(&format!("big{i}"), &when)).collect::<Vec<_>>().join(","));
    assert!(big.len() > 2000);
    assert_eq!(post(&server.addr, "/v1/events", &key, &big).unwrap().0, 413);
    // Burst 2 at 1 request/s: twenty back-to-back requests cannot all pass.
    let answers: Vec<(u16, String)> = (0..20).map(|i| {
        let (status, head, _) = post_raw(&server.addr, "/v1/events", &key, &format!("[{}]", event_json(&format!("r{i}"), &when))).unwrap();
        (status, head.to_ascii_lowercase())
    }).collect();
    let limited: Vec<_> = answers.iter().filter(|(status, _)| *status == 429).collect();
    assert!(!limited.is_empty(), "{answers:?}");
    assert!(limited.iter().all(|(_, head)| head.contains("retry-after: ")), "{limited:?}");
    assert!(answers.iter().all(|(status, _)| matches!(status, 200 | 429)), "{answers:?}");
    assert!(server.terminate().success());
    // Only the accepted requests were stored.
    let accepted = answers.iter().filter(|(status, _)| *status == 200).count() as i64;
    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions")), accepted);
}

/// Kills a loaded server with SIGKILL again and again; every acknowledged event must be in the
/// store exactly once afterwards, every file readable, and nothing there that was never sent.
///
/// Soak: `TALLY_CRASH_CYCLES=500 cargo test -p tally --test e2e sigkill -- --nocapture`.
#[test]
fn sigkill_under_load_loses_no_acknowledged_event() {
    let cycles: usize = std::env::var("TALLY_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20).max(20);
    const CLIENTS: usize = 4;
    const PER_REQUEST: usize = 10;
    let s = Scratch::new();
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let when = recent(1, 12);
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let sent: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    for cycle in 0..cycles {
        let server = Served::start(&s);
        let stop = Arc::new(AtomicBool::new(false));
        let acks_this_cycle: Arc<(Mutex<usize>, Condvar)> = Arc::default();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (addr, key, when) = (server.addr.clone(), key.clone(), when.clone());
                let (stop, acked, sent, acks) = (stop.clone(), acked.clone(), sent.clone(), acks_this_cycle.clone());
                std::thread::spawn(move || {
                    for r in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let ids: Vec<String> = (0..PER_REQUEST).map(|i| format!("c{cycle}-k{c}-r{r}-e{i}")).collect();
                        sent.lock().unwrap().extend(ids.iter().cloned());
                        let body = format!("[{}]", ids.iter().map(|id| event_json(id, &when)).collect::<Vec<_>>().join(","));
                        match post(&addr, "/v1/events", &key, &body) {
                            Ok((200, text)) => {
                                assert!(text.contains(&format!("\"accepted\":{PER_REQUEST}")), "{text}");
                                acked.lock().unwrap().extend(ids);
                                *acks.0.lock().unwrap() += 1;
                                acks.1.notify_all();
                            }
                            Ok((status, text)) => panic!("unexpected {status}: {text}"),
                            Err(_) => break, // the server died mid-request: not acknowledged
                        }
                    }
                })
            })
            .collect();
        // Kill once this cycle has seen some acknowledgements (a condition, not a timer),
        // at a point that moves around from cycle to cycle.
        let want = 3 + (cycle * 7) % 17;
        let (count, cv) = &*acks_this_cycle;
        let (count, timeout) = cv.wait_timeout_while(count.lock().unwrap(), Duration::from_secs(60), |n| *n < want).unwrap();
        assert!(!timeout.timed_out(), "cycle {cycle}: only {} acknowledgements in 60 s", *count);
        drop(count);
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
    }
    // A last, clean start replays whatever the kills left in the WAL; a clean stop flushes it.
    assert!(Served::start(&s).terminate().success());
    assert_eq!(wal_files(&s), ["LOCK", "last-seq"], "every WAL segment retired");
    let temps: Vec<_> = s.data_files().into_iter().filter(|f| f.extension().is_some_and(|e| e == "tmp")).collect();
    assert!(temps.is_empty(), "no unfinished file is left behind: {temps:?}");

    let rows = s.sql("select event_id, count(*) as n from conversions group by event_id");
    let mut stored: BTreeMap<String, i64> = BTreeMap::new();
    for b in &rows {
        use datafusion::arrow::util::display::array_value_to_string;
        for i in 0..b.num_rows() {
            stored.insert(array_value_to_string(b.column(0), i).unwrap(), array_value_to_string(b.column(1), i).unwrap().parse().unwrap());
        }
    }
    let acked = acked.lock().unwrap();
    let sent = sent.lock().unwrap();
    assert!(acked.len() >= cycles * PER_REQUEST * 3, "too few acknowledged events to mean anything: {}", acked.len());
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains_key(*id)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?} (of {})", acked.len());
    let duplicated: Vec<_> = stored.iter().filter(|(_, n)| **n != 1).take(5).collect();
    assert!(duplicated.is_empty(), "stored more than once: {duplicated:?}");
    let garbage: Vec<_> = stored.keys().filter(|id| !sent.contains(*id)).take(5).collect();
    assert!(garbage.is_empty(), "never sent: {garbage:?}");
    // Every data file is a complete Parquet file.
    for f in s.data_files().into_iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")) {
        tally_core::store::read_parquet_file(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    eprintln!("crash test: {cycles} SIGKILLs, {} acknowledged, {} stored, {} sent", acked.len(), stored.len(), sent.len());
}

/// The official Python SDKs as real clients: Meta's `facebook_business` (form-encoded, double-
/// encoded `data`, token in the query) and TikTok's `business_api_client` (legacy pixel track and
/// batch). Events arrive in Parquet with identifiers pseudonymized.
#[test]
fn official_sdks_post_to_tally() {
    let s = Scratch::new();
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "1234567890", "--source", "CPIXEL123"]).trim().to_owned();
    let server = Served::start(&s);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sdk/official_sdks.py");
    let out = Command::new("python3").arg(&script).args([&server.addr, &key, "1234567890", "CPIXEL123"]).output().expect("python3");
    assert!(
        out.status.success(),
        "official SDKs failed (python3 -m pip install -r tests/requirements.txt):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["meta_events_received"], 3, "{result}");
    assert!(result["meta_fbtrace_id"].as_str().is_some_and(|s| !s.is_empty()), "{result}");
    assert_eq!(result["tiktok_track"], "accepted", "{result}");
    assert_eq!(result["tiktok_batch"], "accepted", "{result}");
    assert!(server.terminate().success());

    // In Parquet: 3 Meta + 3 TikTok events, the same person on both platforms under one pseudonym.
    let text = s.sql_text("select source_id, count(*) as n, count(distinct em) as people, min(click_id) as click, min(device_os) as os, min(geo_state) as st from conversions group by source_id order by source_id");
    let compact = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(compact.contains("| 1234567890 | 3 | 1 | fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890 | ios | ca |"), "{text}");
    assert!(compact.contains("| CPIXEL123 | 3 | 1 | E.C.P.cb123 | android | |"), "{text}");
    assert_eq!(scalar_i64(&s.sql("select count(distinct em) from conversions where em is not null")), 1, "Meta's and TikTok's hashes of Jane match");
    let p = s.pseudonymizer();
    let jane = tally_core::HashedId::from_hex(&sha256_hex("jane.doe@example.com")).unwrap();
    let stored = s.sql_text("select distinct encode(em, 'hex') as em from conversions where em is not null");
    assert!(stored.contains(&hex::encode(p.pseudonymize(&jane).as_bytes())), "{stored}");
    // No plaintext anywhere on disk (the WAL included, before and after flush).
    for f in s.data_files() {
        let bytes = std::fs::read(&f).unwrap();
        for needle in ["Jane.Doe@Example.com", "jane.doe@example.com", "16505551212", "203.0.113.7", "Jane"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{} contains {needle}", f.display());
        }
    }
}

/// `tally import` and `tally serve` share a data directory: both sets of rows arrive whole.
#[test]
fn import_while_serving_keeps_both() {
    let s = Scratch::new();
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let server = Served::start(&s);
    let when = recent(1, 15);
    let mut csv = String::from("advertiser_id,source_id,event_id,event_name,event_time\n");
    for i in 0..5000 {
        csv.push_str(&format!("acme,px1,imp{i},Purchase,{when}\n"));
    }
    let file = s.write("history.csv", &csv);
    let import = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["--data", s.data().to_str().unwrap(), "import", "conversions", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = 0;
    for r in 0..50 {
        let body = format!("[{}]", (0..10).map(|i| event_json(&format!("api{r}-{i}"), &when)).collect::<Vec<_>>().join(","));
        let (status, text) = post(&server.addr, "/v1/events", &key, &body).unwrap();
        assert_eq!(status, 200, "{text}");
        acked += 10;
    }
    let out = import.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(server.terminate().success());
    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions where event_id like 'imp%'")), 5000);
    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions where event_id like 'api%'")), acked);
    assert_eq!(scalar_i64(&s.sql("select count(distinct event_id) from conversions")), 5000 + acked);
}

/// A plain HTTP/1.1 GET; returns the body.
fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// Polls `condition` until it holds or `limit` passes: waiting on a condition the server
/// exposes (its metrics), not on a guessed duration.
fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

fn metric(addr: &str, name: &str) -> f64 {
    get(addr, "/metrics").lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

/// The store refuses files (a partition path is blocked): acknowledged rows wait in the WAL,
/// the failure shows in /metrics, and flushing resumes by itself once the store is repaired.
#[test]
fn store_failure_loses_nothing_and_recovers_by_itself() {
    let s = Scratch::new();
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let when = recent(1, 16);
    let blocker = s.data().join("conversions/advertiser_id=acme");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a directory").unwrap();
    let server = Served::start(&s);
    let body = format!("[{}]", (0..5).map(|i| event_json(&format!("held{i}"), &when)).collect::<Vec<_>>().join(","));
    assert_eq!(post(&server.addr, "/v1/events", &key, &body).unwrap().0, 200, "the WAL still takes writes");
    assert!(wait_until(Duration::from_secs(30), || metric(&server.addr, "tally_flush_failures_total") >= 1.0), "the flush failure is visible");
    assert_eq!(metric(&server.addr, "tally_flush_segments_total"), 0.0);
    assert_eq!(metric(&server.addr, "tally_wal_append_duration_seconds_count"), 1.0, "one append, timed");
    assert_eq!(metric(&server.addr, "tally_http_request_duration_seconds_count{route=\"/v1/events\"}"), 1.0, "one request, timed");
    assert_eq!(metric(&server.addr, "tally_flush_duration_seconds_count"), 0.0, "a failed flush is not a flush");

    std::fs::remove_file(&blocker).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || metric(&server.addr, "tally_flush_segments_total") >= 1.0),
        "flushing resumes once the store is repaired"
    );
    assert!(server.terminate().success());
    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions where event_id like 'held%'")), 5);
}

/// A tmpfs mounted over a directory for the life of a test (tests run as root, as CI does).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"]).arg(dir).output().expect("run mount");
        assert!(out.status.success(), "mounting a {size} tmpfs at {} failed (the disk-full test needs root): {}", dir.display(), String::from_utf8_lossy(&out.stderr));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` until a write fails with ENOSPC; returns the filler.
fn fill_disk(dir: &std::path::Path) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("unexpected error filling the disk: {e}"),
        }
    }
    // Bytes below a page may still fit; leave none.
    let mut byte = [0u8; 1];
    while f.write(&byte).map(|n| n > 0).unwrap_or(false) {
        byte[0] = byte[0].wrapping_add(1);
    }
    filler
}

/// The data directory's disk fills up: requests get 503 with Retry-After and nothing of them
/// is stored; what was acknowledged before survives; once space returns the server takes
/// writes again by itself, and every acknowledged event reaches Parquet exactly once.
#[test]
fn disk_full_answers_503_and_recovers_when_space_returns() {
    let s = Scratch::new();
    let _disk = Tmpfs::mount(&s.data(), "24m");
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let when = recent(1, 16);
    let batch = |prefix: &str, n: usize| format!("[{}]", (0..n).map(|i| event_json(&format!("{prefix}{i}"), &when)).collect::<Vec<_>>().join(","));
    let server = Served::start(&s);
    assert_eq!(post(&server.addr, "/v1/events", &key, &batch("before", 10)).unwrap().0, 200);

    let filler = fill_disk(&s.data());
    for attempt in 0..3 {
        let (status, head, body) = post_raw(&server.addr, "/v1/events", &key, &batch(&format!("full{attempt}-"), 300)).unwrap();
        assert_eq!(status, 503, "a full disk is 503, not {status}: {body}");
        assert!(head.to_ascii_lowercase().contains("retry-after:"), "503 carries Retry-After: {head}");
        assert!(body.contains("write-ahead log unavailable"), "{body}");
    }
    assert!(metric(&server.addr, "tally_wal_failures_total") >= 3.0);

    std::fs::remove_file(&filler).unwrap();
    let (status, body) = post(&server.addr, "/v1/events", &key, &batch("after", 10)).unwrap();
    assert_eq!(status, 200, "writes resume by themselves once space returns: {body}");
    assert!(server.terminate().success(), "graceful stop flushes the WAL");

    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions where event_id like 'full%'")), 0, "nothing of a refused request is stored");
    assert_eq!(scalar_i64(&s.sql("select count(distinct event_id) from conversions where event_id like 'before%'")), 10);
    assert_eq!(scalar_i64(&s.sql("select count(distinct event_id) from conversions where event_id like 'after%'")), 10);
    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions")), 20, "each acknowledged event exactly once");
}

/// A raw HTTP/1.1 request; returns (status, head, body bytes).
fn request(addr: &str, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(stream, "{head}Host: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).expect("a status line");
    (status, head, response[split + 4..].to_vec())
}

/// The browser pixel: POST and GIF store rows with origin = 'browser' (whatever the page
/// claims), CORS answers only configured origins, unknown pixels are refused, and a pixel of
/// another advertiser's source cannot be written to through this one.
#[test]
fn browser_pixel_stores_browser_rows_with_cors_for_configured_origins() {
    let s = Scratch::new();
    s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]);
    s.ok(&["keys", "create", "--advertiser", "globex", "--source", "px9"]);
    let bad = s.tally(&["serve", "--pixel-origin", "shop.example.com"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("scheme://host"), "{}", String::from_utf8_lossy(&bad.stderr));
    let server = Served::start_with(&s, &["--pixel-origin", "https://shop.example.com"]);
    let now = chrono::Utc::now().timestamp() - 60;

    // Preflight: the configured origin gets CORS headers; another origin gets 403.
    let (status, head, _) = request(&server.addr, "OPTIONS /v1/pixel HTTP/1.1\r\nOrigin: https://shop.example.com\r\nAccess-Control-Request-Method: POST\r\n", b"");
    assert_eq!(status, 204, "{head}");
    assert!(head.to_ascii_lowercase().contains("access-control-allow-origin: https://shop.example.com"), "{head}");
    let (status, _, _) = request(&server.addr, "OPTIONS /v1/pixel HTTP/1.1\r\nOrigin: https://evil.example\r\n", b"");
    assert_eq!(status, 403);

    let row = |id: &str, source: &str| format!(r#"{{"source_id":"{source}","event_id":"{id}","event_name":"Purchase","event_time":{now},"em":"{id}@example.com","value":9.5,"currency":"USD","origin":"server"}}"#);
    let body = format!("[{},{}]", row("px-a", "px1"), row("px-b", "px1"));
    let (status, head, reply) = request(&server.addr, "POST /v1/pixel HTTP/1.1\r\nOrigin: https://shop.example.com\r\nContent-Type: text/plain\r\n", body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    assert!(head.to_ascii_lowercase().contains("access-control-allow-origin: https://shop.example.com"), "{head}");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&reply).unwrap()["accepted"], 2);

    // Another origin's page cannot write; nothing of its request is stored.
    let (status, _, _) = request(&server.addr, "POST /v1/pixel HTTP/1.1\r\nOrigin: https://evil.example\r\n", row("px-evil", "px1").as_bytes());
    assert_eq!(status, 403);
    // A row naming another advertiser's pixel is refused per row.
    let body = format!("[{},{}]", row("px-c", "px1"), row("px-foreign", "px9"));
    let (status, _, reply) = request(&server.addr, "POST /v1/pixel HTTP/1.1\r\n", body.as_bytes());
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!((status, reply["accepted"].as_i64()), (200, Some(1)), "{reply}");
    assert!(reply["rejected"][0]["error"].as_str().unwrap().contains("source"), "{reply}");
    // Unknown pixel, missing pixel.
    assert_eq!(request(&server.addr, "POST /v1/pixel HTTP/1.1\r\n", row("px-x", "nope").as_bytes()).0, 404);
    assert_eq!(request(&server.addr, "POST /v1/pixel HTTP/1.1\r\n", br#"{"event_id":"x"}"#).0, 400);

    // The GIF form.
    let (status, head, gif) = request(
        &server.addr,
        &format!("GET /v1/pixel.gif?source_id=px1&event_id=px-gif&event_name=Lead&event_time={now}&em=gif%40example.com&value=3 HTTP/1.1\r\n"),
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&gif));
    assert!(head.to_ascii_lowercase().contains("content-type: image/gif"), "{head}");
    assert!(gif.starts_with(b"GIF89a"));
    let (status, _, _) = request(&server.addr, "GET /v1/pixel.gif?source_id=px1&event_id=bad&event_name=Lead&event_time=soon HTTP/1.1\r\n", b"");
    assert_eq!(status, 400, "an unparseable time is refused");

    assert!(server.terminate().success());
    assert_eq!(
        s.sql_text("select event_id, origin, source_id, advertiser_id from conversions order by event_id"),
        [
            "+----------+---------+-----------+---------------+",
            "| event_id | origin  | source_id | advertiser_id |",
            "+----------+---------+-----------+---------------+",
            "| px-a     | browser | px1       | acme          |",
            "| px-b     | browser | px1       | acme          |",
            "| px-c     | browser | px1       | acme          |",
            "| px-gif   | browser | px1       | acme          |",
            "+----------+---------+-----------+---------------+",
        ]
        .join("\n")
    );
}

/// `/openapi.json` is served, documents every SPEC endpoint, and each documented path and
/// method is a real route of the running server (none answers 404 or 405).
#[test]
fn openapi_document_covers_every_route() {
    let s = Scratch::new();
    s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]);
    let server = Served::start(&s);
    let (status, _, body) = request(&server.addr, "GET /openapi.json HTTP/1.1\r\n", b"");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("the document is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for spec in [
        "/{api_version}/{pixel_id}/events",
        "/open_api/v1.3/event/track/",
        "/open_api/v1.3/pixel/track/",
        "/open_api/v1.3/pixel/batch/",
        "/v1/events",
        "/v1/touchpoints",
        "/v1/pixel",
        "/v1/pixel.gif",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(spec), "{spec} is documented");
    }
    let mut checked = 0;
    for (path, methods) in paths {
        let concrete = path.replace("{api_version}", "v19.0").replace("{pixel_id}", "px1");
        for (method, operation) in methods.as_object().unwrap() {
            let (status, _, _) = request(&server.addr, &format!("{} {concrete} HTTP/1.1\r\n", method.to_uppercase()), b"");
            assert!(status != 404 && status != 405, "{method} {path} is documented but not served ({status})");
            assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} documents its answers");
            checked += 1;
        }
    }
    assert!(checked >= 13, "{checked}");
    assert_eq!(request(&server.addr, "GET /v1/nope HTTP/1.1\r\n", b"").0, 404, "the check can fail");
}

/// Under a policy that refuses plaintext identifiers, a CAPI request carrying one is refused
/// whole with Meta's envelope (subcode 2804016) naming the field, and nothing of it is stored;
/// the same events hashed are accepted.
#[test]
fn reject_policy_refuses_plaintext_in_capi_with_metas_subcode() {
    let s = Scratch::new();
    s.write("tally.toml", "[policy]\njurisdiction = \"US\"\nplaintext_identifiers = \"reject\"\nk_anonymity = 5\n[[policy.storage]]\nlocal = \"*\"\n");
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1"]).trim().to_owned();
    let server = Served::start(&s);
    let now = chrono::Utc::now().timestamp() - 60;
    let event = |id: &str, em: &str| format!(r#"{{"event_name":"Purchase","event_time":{now},"event_id":"{id}","action_source":"website","user_data":{{"em":["{em}"]}}}}"#);
    let plain = format!(r#"{{"data":[{},{}]}}"#, event("ok1", &sha256_hex("a@b.com")), event("plain", "Jane@Example.com"));
    let (status, reply) = post(&server.addr, &format!("/v19.0/px1/events?access_token={key}"), "", &plain).unwrap();
    assert_eq!(status, 400, "{reply}");
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["error"]["error_subcode"], 2_804_016, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("$['data'][1]['user_data']['em']"), "{reply}");
    let hashed = format!(r#"{{"data":[{},{}]}}"#, event("ok1", &sha256_hex("a@b.com")), event("ok2", &sha256_hex("jane@example.com")));
    let (status, reply) = post(&server.addr, &format!("/v19.0/px1/events?access_token={key}"), "", &hashed).unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(server.terminate().success());
    assert_eq!(s.sql_text("select event_id from conversions order by 1").lines().filter(|l| l.contains("ok") || l.contains("plain")).count(), 2);
    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions where event_id = 'plain'")), 0);
    assert!(!walk(&s.data()).iter().any(|f| std::fs::read(f).is_ok_and(|b| b.windows(16).any(|w| w == b"Jane@Example.com"))), "no plaintext on disk");
}

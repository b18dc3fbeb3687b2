//! The catalog's guarantees that SQL text cannot show: partition pruning in plans, and the
//! tenant boundary in a store holding two advertisers.

use std::path::Path;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::util::pretty::pretty_format_batches;
use tally_core::{DataRoot, Policy, Store};
use tally_queries::{Reader, SessionOptions, reports};

async fn run(store: &Store, reader: &Reader, sql: &str) -> Vec<RecordBatch> {
    let options = SessionOptions { target_partitions: Some(2), ..SessionOptions::default() };
    let ctx = tally_queries::session_for(store, reader, &options).await.unwrap();
    tally_queries::guard::plan(&ctx, sql).await.unwrap().collect().await.unwrap()
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn acme() -> Reader {
    Reader::Advertiser("acme".parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_filters_prune_partitions_in_the_plan() {
    let world = crate::world::world().await;
    let plan = |sql: &'static str| async move {
        let text = pretty_format_batches(&run(&world.store, &acme(), sql).await).unwrap().to_string();
        let mut dates: Vec<String> = text.match_indices("date=").map(|(i, _)| text[i..i + 15].to_owned()).collect();
        dates.sort();
        dates.dedup();
        (text, dates)
    };
    let (_, all) = plan("explain select sum(value) from conversions").await;
    assert!(all.len() > 2, "{all:?}");
    let (text, one) = plan("explain select sum(value) from conversions where date = date '2026-09-01'").await;
    assert_eq!(one, ["date=2026-09-01"], "{text}");
    let (_, week) = plan("explain select sum(value) from conversions where date between date '2026-09-01' and date '2026-09-07'").await;
    assert_eq!(week.len(), 7, "{week:?}");
    // Reports prune too: their date window arrives as a bound parameter.
    let report = reports::find("daily_conversions_by_source").unwrap();
    let options = SessionOptions { target_partitions: Some(2), ..SessionOptions::default() };
    let ctx = tally_queries::session_for(&world.store, &acme(), &options).await.unwrap();
    let params = [("from".to_owned(), "2026-09-01".to_owned()), ("to".to_owned(), "2026-09-02".to_owned())].into();
    let df = report.plan(&ctx, &params).await.unwrap();
    let physical = df.create_physical_plan().await.unwrap();
    let text = datafusion::physical_plan::displayable(physical.as_ref()).indent(true).to_string();
    let mut dates: Vec<&str> = text.match_indices("date=").map(|(i, _)| &text[i..i + 15]).collect();
    dates.sort();
    dates.dedup();
    assert_eq!(dates, ["date=2026-09-01", "date=2026-09-02"], "{text}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The sample world's data, plus a copy of each table's rows under advertiser `globex`
/// with one extra conversion day only globex has.
fn two_advertisers() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let world = futures::executor::block_on(crate::world::world());
    let root = world.store.root().local_dir().unwrap().to_path_buf();
    let data = dir.path().join("data");
    for table in ["conversions", "touchpoints", "spend", "baseline", "conversions_dedup", "attributed_conversions"] {
        copy_dir(&root.join(table).join("advertiser_id=acme"), &data.join(table).join("advertiser_id=acme"));
        copy_dir(&root.join(table).join("advertiser_id=acme"), &data.join(table).join("advertiser_id=globex"));
    }
    copy_dir(&root.join("conversions/advertiser_id=acme/date=2026-09-01"), &data.join("conversions/advertiser_id=globex/date=2026-10-15"));
    let policy = Policy::from_toml("jurisdiction = \"US\"\nplaintext_identifiers = \"hash\"\nk_anonymity = 50\n[[storage]]\nlocal = \"*\"\n").unwrap();
    (dir, Store::open(DataRoot::Local(data), policy).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertiser_session_shows_its_rows_only() {
    let world = crate::world::world().await;
    let (_dir, store) = tokio::task::spawn_blocking(two_advertisers).await.unwrap();
    let globex = Reader::Advertiser("globex".parse().unwrap());
    for table in ["conversions", "touchpoints", "spend", "baseline", "conversions_dedup", "attributed_conversions"] {
        let sql = format!("select count(*) from {table}");
        let alone = count(&run(&world.store, &acme(), &sql).await);
        assert!(alone > 0, "{table}");
        assert_eq!(count(&run(&store, &acme(), &sql).await), alone, "{table}: acme sees only its rows");
        let admin = count(&run(&store, &Reader::Admin, &sql).await);
        assert!(admin > 2 * alone - 1, "{table}: the admin sees both");
        let sql = format!("select count(*) from {table} where advertiser_id <> 'acme'");
        assert_eq!(count(&run(&store, &acme(), &sql).await), 0, "{table}");
    }
    // globex's extra day is invisible to acme through filters, joins and unions alike.
    let probes = [
        "select count(*) from conversions where date = date '2026-10-15'",
        "select count(*) from conversions c join conversions d on c.event_id = d.event_id where d.date = date '2026-10-15'",
        "select count(*) from (select date from conversions union all select date from conversions_dedup) where date = date '2026-10-15'",
        "select count(*) from information_schema.tables where table_name like '%globex%'",
    ];
    for sql in probes {
        assert_eq!(count(&run(&store, &acme(), sql).await), 0, "{sql}");
    }
    assert!(count(&run(&store, &globex, probes[0]).await) > 0);
    // Every report's rows name acme only.
    let ctx = tally_queries::session_for(&store, &acme(), &SessionOptions::default()).await.unwrap();
    for report in reports::all() {
        let batches = report.plan(&ctx, &Default::default()).await.unwrap().collect().await.unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert!(rows > 0, "{}", report.name);
        for b in &batches {
            let ids = cast(b.column_by_name("advertiser_id").unwrap(), &DataType::Utf8).unwrap();
            assert!(ids.as_string::<i32>().iter().all(|v| v == Some("acme")), "{}", report.name);
        }
    }
}

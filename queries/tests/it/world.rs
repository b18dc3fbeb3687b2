//! The committed sample world, imported and attributed into a scratch store once per process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tally_core::schema::Table;
use tally_core::{DataRoot, KeyStore, Policy, Store};
use tally_ingest::{Context, ImportRequest};
use tokio::sync::OnceCell;

/// The committed sample has fixed dates (2026-08/09): a long retention keeps it importable.
const POLICY: &str = "jurisdiction = \"US\"\nplaintext_identifiers = \"hash\"\nk_anonymity = 50\n[[storage]]\nlocal = \"*\"\n\
    [retention]\nconversions = 36500\ntouchpoints = 36500\nspend = 36500\nbaseline = 36500\n";

pub(crate) struct World {
    _dir: tempfile::TempDir,
    pub(crate) store: Store,
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-data/sample")
}

/// The sample world (advertiser `acme`), with `tally attribute`'s derived tables.
pub(crate) async fn world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(DataRoot::Local(dir.path().join("data")), Policy::from_toml(POLICY).unwrap()).unwrap();
            let keys = KeyStore::open_or_create(&dir.path().join("data/_tally/keystore.json")).unwrap();
            for table in [Table::Touchpoints, Table::Conversions, Table::Spend, Table::Baseline] {
                let request = ImportRequest {
                    table,
                    files: vec![sample().join(format!("{}.parquet", table.name()))],
                    format: None,
                    strict: true,
                    context: Context::for_table(&store, table, keys.pseudonymizer().unwrap(), None),
                };
                let report = tally_ingest::import(&store, &request, |_| {}).await.unwrap();
                assert!(report.committed, "{table}: {:?}", report.rejected.first());
            }
            let key_id = keys.pseudonymizer().unwrap().key_id().to_owned();
            // Deterministic attribution only: the probabilistic step's sums vary in the last cent
            // between runs (float summation order), which exact expected results cannot absorb.
            let options = tally_attribution::Options { target_partitions: 2, probabilistic: false, ..tally_attribution::Options::default() };
            tally_attribution::run(&store, &key_id, &options, Arc::new(|_| {})).await.unwrap();
            World { _dir: dir, store }
        })
        .await
}

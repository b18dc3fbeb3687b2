//! Same seed and config ⇒ byte-identical files; another seed ⇒ different files.

use std::path::Path;

use tally_sample::{Format, Table, generate};

use crate::small;

fn files(dir: &Path, format: Format) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = Table::ALL.iter().map(|t| t.file_name(format)).collect();
    names.push("truth/world.json".into());
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
    for format in [Format::Parquet, Format::Csv] {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        // A small batch size exercises several batches and row groups per file.
        let config = tally_sample::WorldConfig {
            batch_rows: 1_000,
            ..small(7)
        };
        generate(&config, a.path(), format).unwrap();
        generate(&config, b.path(), format).unwrap();
        let other = tally_sample::WorldConfig { seed: 8, ..config };
        generate(&other, c.path(), format).unwrap();

        let (fa, fb, fc) = (
            files(a.path(), format),
            files(b.path(), format),
            files(c.path(), format),
        );
        for ((name, x), (_, y)) in fa.iter().zip(&fb) {
            assert!(!x.is_empty(), "{name} is empty");
            assert!(x == y, "{name} differs between two runs with the same seed");
        }
        for ((name, x), (_, z)) in fa.iter().zip(&fc) {
            if name.starts_with("touchpoints")
                || name.starts_with("conversions")
                || name.starts_with("truth/")
            {
                assert!(x != z, "{name} is the same under another seed");
            }
        }
    }
}

#[test]
fn batch_size_does_not_change_the_rows() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let config = small(3);
    generate(&config, a.path(), Format::Csv).unwrap();
    generate(
        &tally_sample::WorldConfig {
            batch_rows: 777,
            ..config
        },
        b.path(),
        Format::Csv,
    )
    .unwrap();
    for t in [
        Table::Conversions,
        Table::Touchpoints,
        Table::Spend,
        Table::Baseline,
    ] {
        let x = std::fs::read(a.path().join(t.file_name(Format::Csv))).unwrap();
        let y = std::fs::read(b.path().join(t.file_name(Format::Csv))).unwrap();
        assert!(x == y, "{} depends on the batch size", t.name());
    }
}

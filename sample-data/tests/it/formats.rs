//! CSV, JSON lines and Parquet hold the same rows; plaintext mode swaps the identifier
//! columns.

use sha2::{Digest, Sha256};
use tally_sample::{Format, Table, WorldConfig, generate, table_schema};

use crate::*;

#[test]
fn csv_jsonl_and_parquet_hold_the_same_rows() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let formats = [Format::Parquet, Format::Csv, Format::Jsonl];
    let config = WorldConfig {
        users: 150,
        ..small(21)
    };
    for (dir, format) in dirs.iter().zip(formats) {
        generate(&config, dir.path(), format).unwrap();
    }
    for table in [
        Table::Conversions,
        Table::Touchpoints,
        Table::Spend,
        Table::Baseline,
    ] {
        let parquet = read(dirs[0].path(), table, Format::Parquet, false);
        assert!(parquet.num_rows() > 0, "{} is empty", table.name());
        for (dir, format) in dirs.iter().zip(formats).skip(1) {
            let other = read(dir.path(), table, format, false);
            assert_eq!(
                parquet.num_rows(),
                other.num_rows(),
                "{} rows in {format:?}",
                table.name()
            );
            for (c, field) in parquet.schema().fields().iter().enumerate() {
                assert_eq!(
                    parquet.column(c).as_ref(),
                    other.column(c).as_ref(),
                    "column {}.{} differs in {format:?}",
                    table.name(),
                    field.name()
                );
            }
        }
    }
}

#[test]
fn text_formats_use_rfc3339_and_exact_headers() {
    let dir = tempfile::tempdir().unwrap();
    generate(
        &WorldConfig {
            users: 50,
            ..small(22)
        },
        dir.path(),
        Format::Csv,
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("conversions.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let expected: Vec<String> = table_schema(Table::Conversions, false)
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(header, expected.join(","));
    assert_eq!(
        header,
        "advertiser_id,source_id,event_id,event_name,event_time,origin,action_source,em_sha256,ph_sha256,external_id_sha256,click_id,device_os,geo_state,value,currency,order_id,is_test,opt_out"
    );
    let row = lines.next().unwrap();
    let time = row.split(',').nth(4).unwrap();
    assert!(is_rfc3339_micros(time), "event_time {time}");
    let spend = std::fs::read_to_string(dir.path().join("spend.csv")).unwrap();
    let date = spend.lines().nth(1).unwrap().split(',').nth(3).unwrap();
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-',
        "date {date}"
    );

    let dir = tempfile::tempdir().unwrap();
    generate(
        &WorldConfig {
            users: 50,
            ..small(22)
        },
        dir.path(),
        Format::Jsonl,
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("touchpoints.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let time = first["touch_time"].as_str().unwrap();
    assert!(is_rfc3339_micros(time), "touch_time {time}");
    assert_eq!(
        first.as_object().unwrap().len(),
        15,
        "every column, nulls explicit"
    );
}

fn is_rfc3339_micros(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[test]
fn plaintext_mode_emits_plaintext_columns_hashing_to_the_hashed_mode() {
    let hashed_dir = tempfile::tempdir().unwrap();
    let plain_dir = tempfile::tempdir().unwrap();
    let config = WorldConfig {
        users: 100,
        ..small(23)
    };
    generate(&config, hashed_dir.path(), Format::Parquet).unwrap();
    let plain = WorldConfig {
        plaintext_identifiers: true,
        ..config
    };
    generate(&plain, plain_dir.path(), Format::Csv).unwrap();

    for table in [Table::Conversions, Table::Touchpoints] {
        let p = read(plain_dir.path(), table, Format::Csv, true);
        let h = read(hashed_dir.path(), table, Format::Parquet, false);
        let schema = p.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert!(
            names.contains(&"email") && names.contains(&"phone") && names.contains(&"external_id")
        );
        assert!(!names.iter().any(|n| n.ends_with("_sha256")), "{names:?}");
        assert_eq!(p.num_rows(), h.num_rows());
        for (plain_col, hash_col) in [
            ("email", "em_sha256"),
            ("phone", "ph_sha256"),
            ("external_id", "external_id_sha256"),
        ] {
            let (pv, hv) = (strs(&p, plain_col), strs(&h, hash_col));
            let mut present = 0;
            for (a, b) in pv.iter().zip(&hv) {
                assert_eq!(a.is_some(), b.is_some());
                if let (Some(a), Some(b)) = (a, b) {
                    assert_eq!(&hex::encode(Sha256::digest(a.as_bytes())), b);
                    present += 1;
                    match plain_col {
                        "email" => assert!(
                            a.starts_with("user")
                                && a.ends_with("@example.com")
                                && a == &a.to_lowercase(),
                            "{a}"
                        ),
                        "phone" => assert!(
                            a.len() == 11
                                && a.starts_with('1')
                                && a.bytes().all(|c| c.is_ascii_digit()),
                            "{a}"
                        ),
                        _ => assert!(a.starts_with("cust-"), "{a}"),
                    }
                }
            }
            assert!(present > 0, "{plain_col} never present");
        }
    }
    // The hashed files hold 64-char lowercase hex.
    let h = read(
        hashed_dir.path(),
        Table::Touchpoints,
        Format::Parquet,
        false,
    );
    for v in strs(&h, "em_sha256").into_iter().flatten().take(100) {
        assert!(
            v.len() == 64
                && v.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{v}"
        );
    }
}

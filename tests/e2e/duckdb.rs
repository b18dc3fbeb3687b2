//! The store is plain hive-partitioned Parquet: DuckDB reads it as it is.

use std::process::Command;

use crate::support::*;

#[test]
fn duckdb_reads_the_stored_tables_with_hive_partitioning() {
    let s = Scratch::new();
    let mut csv = String::from("advertiser_id,touch_id,channel,campaign_id,touch_type,touch_time,email,cost\n");
    for i in 0..60 {
        let adv = if i % 3 == 0 { "globex" } else { "acme" };
        let when = recent(i % 4 + 1, (i % 24) as u32);
        csv.push_str(&format!("{adv},t{i},meta,c{},click,{when},u{}@example.com,0.25\n", i % 5, i % 7));
    }
    let file = s.write("t.csv", &csv);
    s.ok(&["import", "touchpoints", file.to_str().unwrap()]);

    // The same query in both engines; only the byte length of a blob is spelled differently.
    let query = |id_len: &str| {
        format!(
            "select advertiser_id, cast(date as varchar) as date, count(*) as n, \
             count(distinct em) as people, cast(min({id_len}) as bigint) as id_bytes, sum(cost) as cost \
             from touchpoints group by 1, 2 order by 1, 2"
        )
    };
    let script = format!(
        "import duckdb\n\
         con = duckdb.connect()\n\
         con.sql(\"create view touchpoints as select * from read_parquet('{}/touchpoints/**/*.parquet', hive_partitioning=true)\")\n\
         for row in con.sql(\"{}\").fetchall():\n    print('|'.join(str(v) for v in row))\n",
        s.data().display(),
        query("octet_length(em)")
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().expect("python3");
    assert!(
        out.status.success(),
        "DuckDB (python3 -m pip install -r tests/requirements.txt) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck = String::from_utf8(out.stdout).unwrap();

    use datafusion::arrow::util::display::array_value_to_string;
    let mut ours = String::new();
    for b in s.sql(&query("length(encode(em, 'hex')) / 2")) {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b.columns().iter().map(|c| array_value_to_string(c, r).unwrap()).collect();
            ours.push_str(&cells.join("|"));
            ours.push('\n');
        }
    }
    assert_eq!(duck.lines().count(), 8, "2 advertisers × 4 days:\n{duck}");
    assert!(duck.lines().all(|l| l.split('|').nth(4) == Some("32")), "identifiers are 32-byte blobs:\n{duck}");
    assert_eq!(duck, ours);
}

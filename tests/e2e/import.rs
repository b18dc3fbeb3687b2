//! `tally import`: round trips through the store, row errors, strict mode.

use crate::support::*;

fn conversions_csv(s: &Scratch) -> std::path::PathBuf {
    let d1 = recent(3, 10);
    let d2 = recent(2, 23);
    s.write(
        "conversions.csv",
        &format!(
            "advertiser_id,source_id,event_id,event_name,event_time,origin,action_source,em_sha256,ph_sha256,external_id_sha256,click_id,device_os,geo_state,value,currency,order_id,is_test,opt_out\n\
             acme,px1,e1,Purchase,{d1},server,website,{em},,,ck1,iOS,CA,19.99,usd,o1,false,false\n\
             acme,px1,e1,Purchase,{d1},browser,website,,,,ck1,ios,ca,19.99,USD,o1,,\n\
             acme,px1,e2,Lead,{d2},server,website,,{ph},,,android,Texas,,,,true,false\n",
            em = sha256_hex("john_smith@gmail.com"),
            ph = sha256_hex("16505551212"),
        ),
    )
}

#[test]
fn csv_round_trip_through_the_store() {
    let s = Scratch::new();
    let file = conversions_csv(&s);
    let out = s.ok(&["import", "conversions", file.to_str().unwrap()]);
    assert!(out.contains("imported 3 of 3 rows"), "{out}");

    let text = s.sql_text(
        "select event_id, origin, device_os, geo_state, value, currency, is_test, opt_out, jurisdiction, \
         em is not null as has_em, ph is not null as has_ph, cast(date as varchar) as date \
         from conversions order by event_id, origin desc",
    );
    let d1 = &recent(3, 10)[..10];
    let d2 = &recent(2, 23)[..10];
    let expected = format!(
        "+----------+---------+-----------+-----------+-------+----------+---------+---------+--------------+--------+--------+------------+\n\
         | event_id | origin  | device_os | geo_state | value | currency | is_test | opt_out | jurisdiction | has_em | has_ph | date       |\n\
         +----------+---------+-----------+-----------+-------+----------+---------+---------+--------------+--------+--------+------------+\n\
         | e1       | server  | ios       | ca        | 19.99 | USD      | false   | false   | US           | true   | false  | {d1} |\n\
         | e1       | browser | ios       | ca        | 19.99 | USD      | false   | false   | US           | false  | false  | {d1} |\n\
         | e2       | server  | android   | tx        |       |          | true    | false   | US           | false  | true   | {d2} |\n\
         +----------+---------+-----------+-----------+-------+----------+---------+---------+--------------+--------+--------+------------+"
    );
    assert_eq!(text, expected);

    // The stored identifier is BLAKE3-keyed(deployment key, SHA-256 digest), and the key id is kept.
    let p = s.pseudonymizer();
    let digest = tally_core::HashedId::from_hex(&sha256_hex("john_smith@gmail.com")).unwrap();
    let want = hex::encode(p.pseudonymize(&digest).as_bytes());
    let got = s.sql_text("select encode(em, 'hex') as em, key_id from conversions where em is not null");
    assert!(got.contains(&want), "{got} lacks {want}");
    assert!(got.contains(p.key_id()));

    // Files are hive-partitioned and stamped.
    let files: Vec<_> = s.data_files().into_iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].to_str().unwrap().contains(&format!("conversions/advertiser_id=acme/date={d1}/part-")));
    let (_, kv) = tally_core::store::read_parquet_file(&files[0]).unwrap();
    assert_eq!(kv["tally.jurisdiction"], "US");
    assert_eq!(kv["tally.schema_version"], "1");
    assert_eq!(kv["tally.key_id"], p.key_id());
    assert_eq!(kv["tally.policy_sha256"], tally_core::Policy::builtin().sha256());
}

#[test]
fn jsonl_and_parquet_round_trip_to_the_same_rows() {
    let s = Scratch::new();
    let t = recent(1, 8);
    let jsonl = s.write(
        "touch.jsonl",
        &format!(
            "{{\"advertiser_id\":\"acme\",\"touch_id\":\"t1\",\"channel\":\"TikTok\",\"campaign_id\":\"c1\",\"touch_type\":\"click\",\"touch_time\":\"{t}\",\"email\":\"John_Smith@Gmail.com\",\"click_id\":\"ck1\",\"cost\":0.5}}\n\
             \n\
             {{\"advertiser_id\":\"acme\",\"touch_id\":\"t2\",\"channel\":\"meta\",\"campaign_id\":\"c2\",\"touch_type\":\"impression\",\"touch_time\":{secs},\"phone\":\"+1 (650) 555-1212\",\"cost\":0.01}}\n",
            secs = chrono::DateTime::parse_from_rfc3339(&t).unwrap().timestamp() + 60
        ),
    );
    s.ok(&["import", "touchpoints", jsonl.to_str().unwrap()]);
    let from_json = s.sql_text("select touch_id, channel, touch_type, touch_time, encode(em,'hex') em, encode(ph,'hex') ph, click_id, cost from touchpoints order by touch_id");
    assert!(from_json.contains("| tiktok "), "channel is lowercased: {from_json}");

    // Export what DataFusion reads back to Parquet with the import columns, re-import elsewhere
    // with the same key: the rows must be identical.
    let parquet = s.path("touch.parquet");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ctx = tally_queries::session(&s.store()).await.unwrap();
        let df = ctx
            .sql(&format!(
                "select advertiser_id, touch_id, channel, campaign_id, touch_type, touch_time, \
                 case when touch_id = 't1' then '{}' end as em_sha256, \
                 case when touch_id = 't2' then '{}' end as ph_sha256, click_id, cost from touchpoints",
                sha256_hex("john_smith@gmail.com"),
                sha256_hex("16505551212")
            ))
            .await
            .unwrap();
        df.write_parquet(parquet.to_str().unwrap(), datafusion::dataframe::DataFrameWriteOptions::new().with_single_file_output(true), None)
            .await
            .unwrap();
    });
    let s2 = Scratch::new();
    std::fs::create_dir_all(s2.data().join("_tally")).unwrap();
    // Same deployment key, so pseudonyms must match.
    std::fs::copy(s.data().join("_tally/keystore.json"), s2.data().join("_tally/keystore.json")).unwrap();
    s2.ok(&["import", "touchpoints", parquet.to_str().unwrap()]);
    let from_parquet = s2.sql_text("select touch_id, channel, touch_type, touch_time, encode(em,'hex') em, encode(ph,'hex') ph, click_id, cost from touchpoints order by touch_id");
    assert_eq!(from_json, from_parquet);
}

#[test]
fn bad_rows_name_file_line_and_column_and_good_rows_are_stored() {
    let s = Scratch::new();
    let t = recent(1, 9);
    let file = s.write(
        "touch.csv",
        &format!(
            "advertiser_id,touch_id,channel,campaign_id,touch_type,touch_time,email,cost\n\
             acme,t1,meta,c1,click,{t},a@b.com,1\n\
             acme,t2,meta,c1,glance,{t},a@b.com,1\n\
             acme,t3,meta,c1,click,yesterday,a@b.com,1\n\
             acme,t4,meta,c1,click,{t},not-an-email,1\n\
             acme,t5,meta,c1,click,{t},a@b.com\n\
             acme,t6,meta,c1,click,{t},a@b.com,-3\n\
             ACME!,t7,meta,c1,click,{t},a@b.com,1\n\
             acme,t8,meta,c1,impression,{t},,0\n"
        ),
    );
    let out = s.tally(&["import", "touchpoints", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let name = file.display().to_string();
    for needle in [
        format!("{name}: line 3: column `touch_type`: `touch_type` must be one of impression, click"),
        format!("{name}: line 4: column `touch_time`: `touch_time` must be an RFC 3339 time"),
        format!("{name}: line 5: column `email`: `email` is not a valid email address"),
        format!("{name}: line 6: column `*`: expected 8 fields as in the header, found 7"),
        format!("{name}: line 7: column `cost`: `cost` must not be negative"),
        format!("{name}: line 8: column `advertiser_id`: invalid advertiser id"),
    ] {
        assert!(err.contains(&needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(!err.contains("not-an-email"), "an identifier value leaked into the error output");
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 2 of 8 rows"));
    assert_eq!(s.sql_text("select string_agg(touch_id, ',' order by touch_id) from touchpoints").lines().nth(3).unwrap().trim_matches(|c| c == '|' || c == ' '), "t1,t8");
}

#[test]
fn strict_import_stores_nothing_when_a_row_is_bad() {
    let s = Scratch::new();
    let t = recent(1, 9);
    let file = s.write(
        "spend.csv",
        &format!(
            "advertiser_id,channel,campaign_id,date,spend,impressions,clicks,currency\n\
             acme,meta,c1,{d},10.5,100,3,USD\n\
             acme,meta,c2,{d},oops,100,3,USD\n",
            d = &t[..10]
        ),
    );
    let out = s.tally(&["import", "spend", "--strict", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 3: column `spend`"), "{err}");
    assert!(err.lines().last().unwrap().starts_with("tally: --strict: 1 of 2 rows rejected; nothing was stored"), "{err}");
    let parquet: Vec<_> = s.data_files().into_iter().filter(|f| f.to_string_lossy().contains("/spend/")).collect();
    assert!(parquet.is_empty(), "strict import left files: {parquet:?}");

    // Without --strict the good row is stored.
    s.ok(&["import", "spend", file.to_str().unwrap()]);
    assert_eq!(s.sql_text("select campaign_id, spend, impressions from spend"), "+-------------+-------+-------------+\n| campaign_id | spend | impressions |\n+-------------+-------+-------------+\n| c1          | 10.5  | 100         |\n+-------------+-------+-------------+");
}

#[test]
fn file_level_problems_store_nothing_and_say_why() {
    let s = Scratch::new();
    let t = recent(1, 9);
    let good = s.write("good.csv", &format!("advertiser_id,channel,campaign_id,date,conversions\nacme,meta,c1,{},3\n", &t[..10]));
    let unknown = s.write("typo.csv", "advertiser_id,channel,campaign_id,date,conversoins\nacme,meta,c1,2026-01-01,3\n");
    let out = s.tally(&["import", "baseline", good.to_str().unwrap(), unknown.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("typo.csv: unknown column `conversoins` for `baseline`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line reason: {err}");
    assert!(s.data_files().iter().all(|f| !f.to_string_lossy().ends_with(".parquet")), "nothing may be stored");

    let computed = s.write("c.csv", "advertiser_id,channel,campaign_id,date,conversions,key_id\nacme,meta,c1,2026-01-01,3,k9\n");
    let err = stderr(&s.tally(&["import", "baseline", computed.to_str().unwrap()]));
    assert!(err.contains("column `key_id` is set by Tally"), "{err}");

    let err = stderr(&s.tally(&["import", "baseline", s.path("missing.csv").to_str().unwrap()]));
    assert!(err.contains("missing.csv: cannot open"), "{err}");
    let err = stderr(&s.tally(&["import", "bogus", good.to_str().unwrap()]));
    assert!(err.contains("unknown table `bogus`"), "{err}");
}

#[test]
fn advertiser_flag_binds_rows() {
    let s = Scratch::new();
    let d = &recent(1, 9)[..10];
    let file = s.write("b.csv", &format!("channel,campaign_id,date,conversions\nmeta,c1,{d},3\n"));
    s.ok(&["import", "baseline", "--advertiser", "globex", file.to_str().unwrap()]);
    assert_eq!(scalar_i64(&s.sql("select count(*) from baseline where advertiser_id = 'globex'")), 1);
    let other = s.write("o.csv", &format!("advertiser_id,channel,campaign_id,date,conversions\nacme,meta,c1,{d},3\n"));
    let out = s.tally(&["import", "baseline", "--advertiser", "globex", other.to_str().unwrap()]);
    assert!(stderr(&out).contains("row belongs to advertiser `acme`, not `globex`"), "{}", stderr(&out));
}

//! Plaintext identifiers never reach disk.

use crate::support::*;

#[test]
fn no_plaintext_or_bare_digest_on_disk_after_importing_plaintext() {
    let s = Scratch::new();
    let t = recent(2, 12);
    let people = [
        ("Jane.Doe+ads@Example.com", "+1 (415) 555-0134", "jane.doe+ads@example.com", "14155550134"),
        ("marc.o@example.org", "212-555-0199", "marc.o@example.org", "12125550199"),
    ];
    let mut csv = String::from("advertiser_id,source_id,event_id,event_name,event_time,email,phone,external_id,value,currency\n");
    let mut jsonl = String::new();
    for (i, (email, phone, _, _)) in people.iter().enumerate() {
        csv.push_str(&format!("acme,px1,e{i},Purchase,{t},{email},\"{phone}\",cust-secret-{i},10,USD\n"));
        jsonl.push_str(&format!(
            "{{\"advertiser_id\":\"acme\",\"touch_id\":\"t{i}\",\"channel\":\"meta\",\"campaign_id\":\"c\",\"touch_type\":\"click\",\"touch_time\":\"{t}\",\"em\":\"{email}\",\"ph\":\"{phone}\",\"external_id\":\"cust-secret-{i}\"}}\n"
        ));
    }
    let c = s.write("c.csv", &csv);
    let j = s.write("t.jsonl", &jsonl);
    let out = s.tally(&["import", "conversions", c.to_str().unwrap()]);
    assert!(out.status.success());
    let out2 = s.tally(&["import", "touchpoints", j.to_str().unwrap()]);
    assert!(out2.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 identifiers hashed on arrival"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(scalar_i64(&s.sql("select count(*) from conversions where em is not null and ph is not null and external_id is not null")), 2);

    let mut needles: Vec<Vec<u8>> = Vec::new();
    for (i, (email, phone, norm_email, norm_phone)) in people.iter().enumerate() {
        for text in [email.to_string(), phone.to_string(), norm_email.to_string(), norm_phone.to_string(), format!("cust-secret-{i}")] {
            needles.push(text.as_bytes().to_vec());
            // The bare SHA-256 is a join key anyone can compute: it must not be stored either.
            let digest = sha256_hex(&text);
            needles.push(digest.as_bytes().to_vec());
            needles.push(hex::decode(&digest).unwrap());
        }
    }
    // Logs and outputs too.
    let mut haystacks: Vec<(String, Vec<u8>)> = s.data_files().into_iter().map(|f| (f.display().to_string(), std::fs::read(&f).unwrap())).collect();
    haystacks.push(("stdout/stderr".into(), [out.stdout, out.stderr, out2.stdout, out2.stderr].concat()));
    assert!(haystacks.len() > 3);
    for (name, bytes) in &haystacks {
        for n in &needles {
            assert!(bytes.windows(n.len()).all(|w| w != n.as_slice()), "{name} contains {:?}", String::from_utf8_lossy(n));
        }
    }
    // Parquet pages are zstd-compressed, so also scan the decoded stored values.
    let decoded = s.sql_text("select * from conversions") + &s.sql_text("select * from touchpoints");
    for (email, _, norm_email, norm_phone) in &people {
        for text in [email, norm_email, norm_phone] {
            assert!(!decoded.contains(text), "decoded rows contain {text}");
        }
    }
}

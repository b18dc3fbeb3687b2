//! The residency policy: storage outside it is refused before anything is written.

use crate::support::*;

#[test]
fn storage_outside_the_policy_is_refused() {
    let s = Scratch::new();
    let allowed = s.path("allowed");
    s.write(
        "policy.toml",
        &format!(
            "jurisdiction = \"US\"\nplaintext_identifiers = \"hash\"\nk_anonymity = 20\n[[storage]]\nlocal = \"{}\"\n",
            allowed.display()
        ),
    );
    s.write("tally.toml", "policy_file = \"policy.toml\"\n");
    let input = s.write("b.csv", &format!("advertiser_id,channel,campaign_id,date,conversions\nacme,meta,c1,{},3\n", &recent(1, 0)[..10]));

    // --data points outside the allowed directory (tally.toml in the working dir is picked up).
    for cmd in [vec!["import", "baseline", input.to_str().unwrap()], vec!["keys", "create", "--advertiser", "acme"], vec!["keys", "list"]] {
        let out = s.tally(&cmd);
        assert!(!out.status.success(), "{cmd:?} must be refused");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "one-line reason: {err}");
        assert!(err.contains(&format!("storage `{}` is not allowed by the policy (allowed: {})", s.data().display(), allowed.display())), "{err}");
        assert!(!s.data().exists(), "{cmd:?} touched the refused directory");
    }

    // The same command under the allowed root works.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .current_dir(s.dir.path())
        .args(["--data", allowed.join("d").to_str().unwrap(), "import", "baseline", input.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let file = walk(&allowed).into_iter().find(|f| f.extension().is_some_and(|e| e == "parquet")).unwrap();
    let (_, kv) = tally_core::store::read_parquet_file(&file).unwrap();
    let policy = tally_core::Policy::from_file(&s.path("policy.toml")).unwrap();
    assert_eq!(kv["tally.policy_sha256"], policy.sha256());
}

#[test]
fn invalid_policies_stop_every_command() {
    let s = Scratch::new();
    s.write("eu.toml", "policy_file = \"p.toml\"\n");
    s.write("p.toml", "jurisdiction = \"US\"\nplaintext_identifiers = \"hash\"\nk_anonymity = 5\n[[storage]]\ns3 = \"s3://b\"\nregion = \"eu-west-1\"\n");
    let out = s.tally(&["--config", s.path("eu.toml").to_str().unwrap(), "keys", "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bucket `s3://b` is in region `eu-west-1`, outside the US jurisdiction"), "{}", stderr(&out));
}

#[test]
fn reject_policy_refuses_plaintext_identifiers() {
    let s = Scratch::new();
    s.write(
        "tally.toml",
        "[policy]\njurisdiction = \"US\"\nplaintext_identifiers = \"reject\"\nk_anonymity = 5\n[[policy.storage]]\nlocal = \"*\"\n",
    );
    let t = recent(1, 9);
    let file = s.write(
        "t.csv",
        &format!(
            "advertiser_id,touch_id,channel,campaign_id,touch_type,touch_time,email\nacme,t1,meta,c1,click,{t},a@b.com\nacme,t2,meta,c1,click,{t},{}\n",
            sha256_hex("a@b.com")
        ),
    );
    let out = s.tally(&["import", "touchpoints", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 2: column `email`: `email` must be SHA-256 hashed (policy refuses plaintext identifiers)"), "{}", stderr(&out));
    assert_eq!(scalar_i64(&s.sql("select count(*) from touchpoints")), 1);
}

//! `tally keys`.

use crate::support::*;

#[test]
fn create_list_revoke() {
    let s = Scratch::new();
    let key = s.ok(&["keys", "create", "--advertiser", "acme", "--source", "px1", "--source", "px2"]);
    let key = key.trim();
    assert!(key.starts_with("tally_") && !key.contains(char::is_whitespace), "key alone on stdout: {key:?}");
    let store = tally_core::KeyStore::open_or_create(&s.data().join("_tally/keystore.json")).unwrap();
    let who = store.authenticate(key).unwrap();
    assert_eq!(who.advertiser_id.as_str(), "acme");

    let list = s.ok(&["keys", "list"]);
    assert!(list.contains(&who.key_id) && list.contains("px1,px2") && list.contains("active"), "{list}");
    assert!(!list.contains(key), "list must never show keys");

    let out = s.tally(&["keys", "create", "--advertiser", "globex", "--source", "px1"]);
    assert!(stderr(&out).contains("source `px1` already belongs to advertiser `acme`"));
    s.ok(&["keys", "revoke", &who.key_id]);
    assert!(s.ok(&["keys", "list"]).contains("revoked"));
    let store = tally_core::KeyStore::open_or_create(&s.data().join("_tally/keystore.json")).unwrap();
    assert!(store.authenticate(key).is_none());
    assert!(stderr(&s.tally(&["keys", "create", "--advertiser", "Bad Name"])).contains("invalid advertiser id"));
}

//! Identifiers: normalization, hashing and pseudonymization.
//!
//! An identifier arrives either as plaintext (`John_Smith@Gmail.com `) or as the SHA-256 hex
//! digest of its normalized form, the way Meta CAPI and TikTok's Events API expect it.
//! This module is the only place plaintext is handled: [`hash_identifier`] normalizes it
//! following Meta's rules, hashes it and drops it, returning a [`HashedId`]. Nothing here
//! ever puts a plaintext value into an error message, so errors are safe to log.
//!
//! At rest an identifier is a [`PseudoId`]: `BLAKE3-keyed(key, sha256_digest)`, produced by a
//! [`Pseudonymizer`] holding the deployment key. Low-cardinality fields (state, country,
//! gender) can be decoded back from their digest by dictionary lookup ([`decode_low_cardinality`]),
//! which is what cohorts need.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// The identifier fields of Meta's `user_data` (TikTok's `user` maps onto the same set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdField {
    /// Email.
    Em,
    /// Phone number.
    Ph,
    /// First name.
    Fn,
    /// Last name.
    Ln,
    /// Date of birth.
    Db,
    /// Gender.
    Ge,
    /// City.
    Ct,
    /// State.
    St,
    /// Zip / postal code.
    Zp,
    /// Country.
    Country,
    /// The advertiser's own customer id.
    ExternalId,
}

impl IdField {
    /// The field's name as Meta spells it.
    pub fn name(self) -> &'static str {
        match self {
            IdField::Em => "em",
            IdField::Ph => "ph",
            IdField::Fn => "fn",
            IdField::Ln => "ln",
            IdField::Db => "db",
            IdField::Ge => "ge",
            IdField::Ct => "ct",
            IdField::St => "st",
            IdField::Zp => "zp",
            IdField::Country => "country",
            IdField::ExternalId => "external_id",
        }
    }
}

impl fmt::Display for IdField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do with a plaintext value in a field that should arrive hashed (policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaintextMode {
    /// Normalize and hash it on arrival (reported back to the sender).
    Hash,
    /// Refuse it (Meta's error subcode 2804016).
    Reject,
}

/// How a [`HashedId`] came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// The sender hashed it (64 hex characters).
    SenderHashed,
    /// It arrived in plaintext and was normalized and hashed here.
    HashedOnArrival,
}

/// Why a value could not become an identifier. Never carries the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty after trimming.
    #[error("`{0}` is empty")]
    Empty(IdField),
    /// The plaintext does not look like a value of this field.
    #[error("`{field}` is not a valid {what}")]
    Invalid {
        /// The field.
        field: IdField,
        /// What was expected, e.g. "email address".
        what: &'static str,
    },
    /// Plaintext where policy requires a SHA-256 digest.
    #[error("`{0}` must be SHA-256 hashed (policy refuses plaintext identifiers)")]
    PlaintextRefused(IdField),
}

/// Hex digit values; 0xff for anything that is not a hex digit.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// The SHA-256 digest of a normalized identifier: the form senders share with ad platforms.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashedId([u8; 32]);

impl HashedId {
    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as Meta and TikTok exchange it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters (either case); `None` for anything else.
    pub fn from_hex(s: &str) -> Option<HashedId> {
        let s = s.trim().as_bytes();
        if s.len() != 64 {
            return None;
        }
        // A table lookup per nibble: this runs three times per ingested row.
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
            if (hi | lo) & 0xf0 != 0 {
                return None;
            }
            *o = (hi << 4) | lo;
        }
        Some(HashedId(out))
    }

    fn of_normalized(normalized: &str) -> HashedId {
        HashedId(Sha256::digest(normalized.as_bytes()).into())
    }
}

impl fmt::Debug for HashedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashedId({})", &self.to_hex()[..12])
    }
}

/// An identifier as stored: `BLAKE3-keyed(deployment key, SHA-256 digest)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PseudoId([u8; 32]);

impl PseudoId {
    /// The 32 stored bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PseudoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PseudoId({})", &hex::encode(self.0)[..12])
    }
}

/// Turns a SHA-256 digest into the stored [`PseudoId`] with one deployment key.
#[derive(Clone)]
pub struct Pseudonymizer {
    key_id: String,
    key: [u8; 32],
}

impl Pseudonymizer {
    /// A pseudonymizer for key `key_id`.
    pub fn new(key_id: impl Into<String>, key: [u8; 32]) -> Pseudonymizer {
        Pseudonymizer { key_id: key_id.into(), key }
    }

    /// The id stored beside every pseudonymized value (`key_id` column, `tally.key_id` metadata).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `BLAKE3-keyed(key, digest)`.
    pub fn pseudonymize(&self, id: &HashedId) -> PseudoId {
        PseudoId(*blake3::keyed_hash(&self.key, &id.0).as_bytes())
    }
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymizer").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Turns a raw value of `field` into its SHA-256 digest.
///
/// A value of 64 hex characters is taken as a digest already. Anything else is plaintext:
/// with [`PlaintextMode::Hash`] it is normalized by Meta's rules and hashed; with
/// [`PlaintextMode::Reject`] it is refused. The plaintext goes no further than this function.
///
/// ```
/// use tally_core::ident::{hash_identifier, IdField, PlaintextMode, Provenance};
/// let (id, how) = hash_identifier(IdField::Em, " John_Smith@Gmail.com ", PlaintextMode::Hash).unwrap();
/// assert_eq!(id.to_hex(), "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f");
/// assert_eq!(how, Provenance::HashedOnArrival);
/// ```
pub fn hash_identifier(
    field: IdField,
    raw: &str,
    mode: PlaintextMode,
) -> Result<(HashedId, Provenance), IdError> {
    if let Some(id) = HashedId::from_hex(raw) {
        return Ok((id, Provenance::SenderHashed));
    }
    if raw.trim().is_empty() {
        return Err(IdError::Empty(field));
    }
    if mode == PlaintextMode::Reject {
        return Err(IdError::PlaintextRefused(field));
    }
    let normalized = normalize(field, raw)?;
    Ok((HashedId::of_normalized(&normalized), Provenance::HashedOnArrival))
}

/// Meta's normalization for each field (TikTok's phones map onto the same canonical digits).
fn normalize(field: IdField, raw: &str) -> Result<String, IdError> {
    let trimmed = raw.trim();
    let invalid = |what| IdError::Invalid { field, what };
    let out = match field {
        IdField::Em => {
            let lower = trimmed.to_lowercase();
            let (local, domain) = lower.split_once('@').ok_or(invalid("email address"))?;
            if local.is_empty() || domain.is_empty() || domain.contains('@') || lower.contains(char::is_whitespace) {
                return Err(invalid("email address"));
            }
            lower
        }
        IdField::Ph => normalize_phone(trimmed).ok_or(invalid("phone number"))?,
        IdField::Fn | IdField::Ln | IdField::Ct => {
            // Lowercase, letters only: no punctuation, digits or spaces (UTF-8 letters kept).
            let s: String = trimmed.chars().filter(|c| c.is_alphabetic()).flat_map(char::to_lowercase).collect();
            if s.is_empty() {
                return Err(invalid("name"));
            }
            s
        }
        IdField::Db => normalize_birth_date(trimmed).ok_or(invalid("date of birth"))?,
        IdField::Ge => match trimmed.to_lowercase().as_str() {
            "f" | "female" | "w" | "woman" => "f".to_owned(),
            "m" | "male" | "man" => "m".to_owned(),
            _ => return Err(invalid("gender (`f` or `m`)")),
        },
        IdField::St => normalize_state(trimmed).ok_or(invalid("US state"))?,
        IdField::Zp => {
            let s: String = trimmed.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_lowercase).collect();
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            if digits.len() >= 5 {
                digits[..5].to_owned() // US: the first five digits only
            } else if s.is_empty() {
                return Err(invalid("zip code"));
            } else {
                s
            }
        }
        IdField::Country => {
            let s = trimmed.to_lowercase();
            if !COUNTRIES.contains(&s.as_str()) {
                return Err(invalid("ISO 3166-1 alpha-2 country code"));
            }
            s
        }
        // Ids are case-sensitive in many systems: only surrounding whitespace goes.
        IdField::ExternalId => trimmed.to_owned(),
    };
    Ok(out)
}

/// Digits only, international `00`/`+` prefixes and leading zeros removed, country code kept.
/// A ten-digit NANP number without a country code gets `1` (the US default of a US deployment).
fn normalize_phone(raw: &str) -> Option<String> {
    if raw.chars().any(|c| c.is_alphabetic()) {
        return None;
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_start_matches('0');
    let canonical = if digits.len() == 10 && matches!(digits.as_bytes()[0], b'2'..=b'9') {
        format!("1{digits}")
    } else {
        digits.to_owned()
    };
    (8..=15).contains(&canonical.len()).then_some(canonical)
}

/// `YYYYMMDD` from `YYYYMMDD`, `YYYY-MM-DD`, `YYYY/MM/DD` or US `MM/DD/YYYY`.
fn normalize_birth_date(raw: &str) -> Option<String> {
    let parts: Vec<&str> = raw.split(['-', '/', '.', ' ']).filter(|p| !p.is_empty()).collect();
    let (y, m, d) = match parts.as_slice() {
        [one] if one.len() == 8 => (&one[..4], &one[4..6], &one[6..]),
        [y, m, d] if y.len() == 4 => (*y, *m, *d),
        [m, d, y] if y.len() == 4 => (*y, *m, *d),
        _ => return None,
    };
    let (y, m, d): (i32, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let date = chrono::NaiveDate::from_ymd_opt(y, m, d)?;
    Some(date.format("%Y%m%d").to_string())
}

fn normalize_state(raw: &str) -> Option<String> {
    let s: String = raw.chars().filter(|c| c.is_alphabetic()).flat_map(char::to_lowercase).collect();
    if US_STATES.iter().any(|(code, _)| *code == s) {
        return Some(s);
    }
    US_STATES.iter().find(|(_, name)| name.replace(' ', "") == s).map(|(code, _)| (*code).to_owned())
}

/// The plain, normalized value of a low-cardinality field (state, country, gender) — stored in
/// plain form for cohorts — from either its plaintext or its SHA-256 digest.
pub fn plain_low_cardinality(field: IdField, raw: &str) -> Result<String, IdError> {
    if !matches!(field, IdField::St | IdField::Country | IdField::Ge) {
        return Err(IdError::Invalid { field, what: "low-cardinality field" });
    }
    if let Some(id) = HashedId::from_hex(raw) {
        return decode_low_cardinality(field, &id)
            .map(str::to_owned)
            .ok_or(IdError::Invalid { field, what: "digest of a known value" });
    }
    if raw.trim().is_empty() {
        return Err(IdError::Empty(field));
    }
    normalize(field, raw)
}

/// Recovers the plain value of a low-cardinality field (state, country, gender) from its
/// digest by dictionary lookup; `None` for other fields or unknown digests.
pub fn decode_low_cardinality(field: IdField, id: &HashedId) -> Option<&'static str> {
    static DICT: LazyLock<HashMap<(IdField, HashedId), &'static str>> = LazyLock::new(|| {
        let mut m = HashMap::new();
        for (code, _) in US_STATES {
            m.insert((IdField::St, HashedId::of_normalized(code)), *code);
        }
        for code in COUNTRIES {
            m.insert((IdField::Country, HashedId::of_normalized(code)), *code);
        }
        for g in ["f", "m"] {
            m.insert((IdField::Ge, HashedId::of_normalized(g)), g);
        }
        m
    });
    DICT.get(&(field, *id)).copied()
}

/// US states, DC and territories: ANSI code and name, lowercase.
const US_STATES: &[(&str, &str)] = &[
    ("al", "alabama"), ("ak", "alaska"), ("az", "arizona"), ("ar", "arkansas"), ("ca", "california"),
    ("co", "colorado"), ("ct", "connecticut"), ("de", "delaware"), ("fl", "florida"), ("ga", "georgia"),
    ("hi", "hawaii"), ("id", "idaho"), ("il", "illinois"), ("in", "indiana"), ("ia", "iowa"),
    ("ks", "kansas"), ("ky", "kentucky"), ("la", "louisiana"), ("me", "maine"), ("md", "maryland"),
    ("ma", "massachusetts"), ("mi", "michigan"), ("mn", "minnesota"), ("ms", "mississippi"),
    ("mo", "missouri"), ("mt", "montana"), ("ne", "nebraska"), ("nv", "nevada"),
    ("nh", "new hampshire"), ("nj", "new jersey"), ("nm", "new mexico"), ("ny", "new york"),
    ("nc", "north carolina"), ("nd", "north dakota"), ("oh", "ohio"), ("ok", "oklahoma"),
    ("or", "oregon"), ("pa", "pennsylvania"), ("ri", "rhode island"), ("sc", "south carolina"),
    ("sd", "south dakota"), ("tn", "tennessee"), ("tx", "texas"), ("ut", "utah"), ("vt", "vermont"),
    ("va", "virginia"), ("wa", "washington"), ("wv", "west virginia"), ("wi", "wisconsin"),
    ("wy", "wyoming"), ("dc", "district of columbia"), ("pr", "puerto rico"), ("gu", "guam"),
    ("vi", "virgin islands"), ("as", "american samoa"), ("mp", "northern mariana islands"),
];

/// ISO 3166-1 alpha-2 codes, lowercase.
const COUNTRIES: &[&str] = &[
    "ad", "ae", "af", "ag", "ai", "al", "am", "ao", "aq", "ar", "as", "at", "au", "aw", "ax", "az",
    "ba", "bb", "bd", "be", "bf", "bg", "bh", "bi", "bj", "bl", "bm", "bn", "bo", "bq", "br", "bs",
    "bt", "bv", "bw", "by", "bz", "ca", "cc", "cd", "cf", "cg", "ch", "ci", "ck", "cl", "cm", "cn",
    "co", "cr", "cu", "cv", "cw", "cx", "cy", "cz", "de", "dj", "dk", "dm", "do", "dz", "ec", "ee",
    "eg", "eh", "er", "es", "et", "fi", "fj", "fk", "fm", "fo", "fr", "ga", "gb", "gd", "ge", "gf",
    "gg", "gh", "gi", "gl", "gm", "gn", "gp", "gq", "gr", "gs", "gt", "gu", "gw", "gy", "hk", "hm",
    "hn", "hr", "ht", "hu", "id", "ie", "il", "im", "in", "io", "iq", "ir", "is", "it", "je", "jm",
    "jo", "jp", "ke", "kg", "kh", "ki", "km", "kn", "kp", "kr", "kw", "ky", "kz", "la", "lb", "lc",
    "li", "lk", "lr", "ls", "lt", "lu", "lv", "ly", "ma", "mc", "md", "me", "mf", "mg", "mh", "mk",
    "ml", "mm", "mn", "mo", "mp", "mq", "mr", "ms", "mt", "mu", "mv", "mw", "mx", "my", "mz", "na",
    "nc", "ne", "nf", "ng", "ni", "nl", "no", "np", "nr", "nu", "nz", "om", "pa", "pe", "pf", "pg",
    "ph", "pk", "pl", "pm", "pn", "pr", "ps", "pt", "pw", "py", "qa", "re", "ro", "rs", "ru", "rw",
    "sa", "sb", "sc", "sd", "se", "sg", "sh", "si", "sj", "sk", "sl", "sm", "sn", "so", "sr", "ss",
    "st", "sv", "sx", "sy", "sz", "tc", "td", "tf", "tg", "th", "tj", "tk", "tl", "tm", "tn", "to",
    "tr", "tt", "tv", "tw", "tz", "ua", "ug", "um", "us", "uy", "uz", "va", "vc", "ve", "vg", "vi",
    "vn", "vu", "wf", "ws", "ye", "yt", "za", "zm", "zw",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    fn norm(field: IdField, raw: &str) -> Result<String, IdError> {
        normalize(field, raw)
    }

    #[test]
    fn meta_published_examples() {
        // Meta's customer-information-parameters page: the email example and its digest.
        let (id, how) = hash_identifier(IdField::Em, "john_smith@gmail.com", PlaintextMode::Hash).unwrap();
        assert_eq!(id.to_hex(), "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f");
        assert_eq!(how, Provenance::HashedOnArrival);
        assert_eq!(norm(IdField::Em, "  John_Smith@GMAIL.com\n").unwrap(), "john_smith@gmail.com");
        assert_eq!(norm(IdField::Ph, "(650)555-1212").unwrap(), "16505551212");
        assert_eq!(norm(IdField::Ph, "+1 (616) 954-78 88").unwrap(), "16169547888");
        assert_eq!(norm(IdField::Country, "US").unwrap(), "us");
        assert_eq!(norm(IdField::St, "CA").unwrap(), "ca");
        assert_eq!(norm(IdField::St, "California").unwrap(), "ca");
        assert_eq!(norm(IdField::St, "New York").unwrap(), "ny");
        assert_eq!(norm(IdField::Zp, "94035-1234").unwrap(), "94035");
        assert_eq!(norm(IdField::Zp, "W1A 1AA").unwrap(), "w1a1aa");
        assert_eq!(norm(IdField::Fn, "Mary-Ann").unwrap(), "maryann");
        assert_eq!(norm(IdField::Ln, " O'Brien ").unwrap(), "obrien");
        assert_eq!(norm(IdField::Fn, "José").unwrap(), "josé");
        assert_eq!(norm(IdField::Ct, "Menlo Park").unwrap(), "menlopark");
        assert_eq!(norm(IdField::Ge, "Female").unwrap(), "f");
        assert_eq!(norm(IdField::Db, "1997-02-14").unwrap(), "19970214");
        assert_eq!(norm(IdField::Db, "02/14/1997").unwrap(), "19970214");
        assert_eq!(norm(IdField::Db, "19970214").unwrap(), "19970214");
        assert_eq!(norm(IdField::ExternalId, " Cust-42 ").unwrap(), "Cust-42");
    }

    #[test]
    fn tiktok_e164_phone_matches_meta_form() {
        let meta = hash_identifier(IdField::Ph, "(650) 555-1212", PlaintextMode::Hash).unwrap().0;
        let tiktok = hash_identifier(IdField::Ph, "+16505551212", PlaintextMode::Hash).unwrap().0;
        let intl = hash_identifier(IdField::Ph, "0016505551212", PlaintextMode::Hash).unwrap().0;
        assert_eq!(meta, tiktok);
        assert_eq!(meta, intl);
        assert_eq!(meta.to_hex(), sha("16505551212"));
        // A non-US number keeps its own country code.
        assert_eq!(norm(IdField::Ph, "+44 20 7946 0958").unwrap(), "442079460958");
    }

    #[test]
    fn digests_pass_through_in_either_case() {
        let digest = sha("john_smith@gmail.com");
        let upper = digest.to_uppercase();
        let (a, how) = hash_identifier(IdField::Em, &upper, PlaintextMode::Reject).unwrap();
        assert_eq!(how, Provenance::SenderHashed);
        assert_eq!(a.to_hex(), digest);
        // 63 hex chars is not a digest: it is plaintext, and not an email.
        assert!(hash_identifier(IdField::Em, &digest[1..], PlaintextMode::Hash).is_err());
        assert!(HashedId::from_hex(&format!("{}g", &digest[1..])).is_none());
        assert!(HashedId::from_hex(&format!("{}\u{e9}", &digest[2..])).is_none());
        assert_eq!(HashedId::from_hex(&format!(" {digest}\n")).unwrap().to_hex(), digest);
    }

    #[test]
    fn bad_values_are_refused_without_echoing_them() {
        for (field, raw) in [
            (IdField::Em, "not-an-email"),
            (IdField::Em, "a@b@c"),
            (IdField::Ph, "call me maybe"),
            (IdField::Ph, "12345"),
            (IdField::Country, "usa"),
            (IdField::St, "zz"),
            (IdField::Db, "1997-13-40"),
            (IdField::Ge, "x"),
        ] {
            let err = hash_identifier(field, raw, PlaintextMode::Hash).unwrap_err();
            assert!(!err.to_string().contains(raw), "{err} echoes {raw}");
        }
        assert_eq!(hash_identifier(IdField::Em, "  ", PlaintextMode::Hash).unwrap_err(), IdError::Empty(IdField::Em));
        assert_eq!(
            hash_identifier(IdField::Em, "a@b.com", PlaintextMode::Reject).unwrap_err(),
            IdError::PlaintextRefused(IdField::Em)
        );
    }

    #[test]
    fn pseudonymization_is_keyed_and_stable() {
        let id = hash_identifier(IdField::Em, "a@b.com", PlaintextMode::Hash).unwrap().0;
        let k1 = Pseudonymizer::new("k1", [7; 32]);
        let k2 = Pseudonymizer::new("k2", [8; 32]);
        assert_eq!(k1.pseudonymize(&id), k1.pseudonymize(&id));
        assert_ne!(k1.pseudonymize(&id), k2.pseudonymize(&id));
        assert_ne!(k1.pseudonymize(&id).as_bytes(), id.as_bytes());
        assert_eq!(k1.pseudonymize(&id).as_bytes(), blake3::keyed_hash(&[7; 32], id.as_bytes()).as_bytes());
    }

    #[test]
    fn low_cardinality_fields_decode() {
        let st = HashedId::from_hex(&sha("ca")).unwrap();
        assert_eq!(decode_low_cardinality(IdField::St, &st), Some("ca"));
        let us = HashedId::from_hex(&sha("us")).unwrap();
        assert_eq!(decode_low_cardinality(IdField::Country, &us), Some("us"));
        assert_eq!(decode_low_cardinality(IdField::Ge, &HashedId::from_hex(&sha("f")).unwrap()), Some("f"));
        // Emails are never decodable, and a state digest is not a country.
        let em = hash_identifier(IdField::Em, "a@b.com", PlaintextMode::Hash).unwrap().0;
        assert_eq!(decode_low_cardinality(IdField::Em, &em), None);
        assert_eq!(decode_low_cardinality(IdField::Country, &st), Some("ca")); // "ca" is also Canada
        assert_eq!(decode_low_cardinality(IdField::Country, &HashedId::from_hex(&sha("ny")).unwrap()), None);
        assert_eq!(plain_low_cardinality(IdField::St, &sha("tx")).unwrap(), "tx");
        assert_eq!(plain_low_cardinality(IdField::St, " Texas").unwrap(), "tx");
        assert!(plain_low_cardinality(IdField::St, &sha("zz")).is_err());
        assert!(plain_low_cardinality(IdField::Em, "a@b.com").is_err());
    }
}

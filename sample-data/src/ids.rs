//! Identifiers of the generated world: users' plaintext email/phone/external id (already
//! normalized the Meta way, so hashing them directly gives the normalized SHA-256),
//! their hex digests, opaque unique ids (`touch_id`, `event_id`) and platform click ids.
//!
//! Uniqueness never relies on luck: every opaque id embeds `mix64` of a packed
//! `(advertiser, user, sequence)` triple, and `mix64` is a bijection on `u64`.

use sha2::{Digest, Sha256};

/// Salts separating the id spaces that share `unique_code`.
pub(crate) const SALT_TOUCH: u64 = 0x7a11_70c4_0000_0001;
pub(crate) const SALT_EVENT: u64 = 0x7a11_e7e7_0000_0002;
pub(crate) const SALT_CLICK: u64 = 0x7a11_c11c_0000_0003;

/// Bits of the sequence number inside a packed id.
pub(crate) const SEQ_BITS: u32 = 20;

/// SplitMix64's finalizer: a bijection on `u64` that looks random.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A code unique per `(salt, advertiser < 256, user < 2^36, seq < 2^20)`.
pub(crate) fn unique_code(salt: u64, advertiser: usize, user: u64, seq: u64) -> u64 {
    let packed = ((advertiser as u64) << 56) | (user << SEQ_BITS) | seq;
    mix64(packed ^ salt)
}

/// Lowercase hex SHA-256 of `s`.
pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Plaintext identifiers of one user, normalized as Meta wants them.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub(crate) email: String,
    pub(crate) phone: String,
    pub(crate) external_id: String,
}

impl Person {
    /// `user<idx>.<2 chars>@example.com`, `1<area><7 digits>`, `cust-<idx:06>`.
    /// The phone's last 7 digits are a bijection of the user index, so phones are unique
    /// within an advertiser up to 10^7 users.
    pub(crate) fn new(user: u64, tag: [u8; 2], area: u16) -> Self {
        const ALPHA: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let t0 = ALPHA[usize::from(tag[0]) % 26] as char;
        let t1 = ALPHA[usize::from(tag[1]) % 36] as char;
        let line = (user.wrapping_mul(7_919) + 1_234_567) % 10_000_000;
        Person {
            email: format!("user{user}.{t0}{t1}@example.com"),
            phone: format!("1{area:03}{line:07}"),
            external_id: format!("cust-{user:06}"),
        }
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn push_base64url(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
}

/// A click id in the style of `style`: `code` makes it unique, `noise` makes it look
/// like the real thing, `click_ms` is the click time (Meta's `fbc` embeds it).
pub(crate) fn click_id(
    style: crate::ClickIdStyle,
    code: u64,
    noise: u128,
    click_ms: i64,
) -> String {
    use crate::ClickIdStyle as S;
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&code.to_be_bytes());
    bytes[8..].copy_from_slice(&noise.to_le_bytes());
    let mut out = String::with_capacity(48);
    match style {
        S::Tiktok => {
            out.push_str("E.C.P.");
            push_base64url(&mut out, &bytes[..21]);
        }
        S::Meta => {
            out.push_str("fb.1.");
            out.push_str(&click_ms.to_string());
            out.push_str(".IwAR");
            push_base64url(&mut out, &bytes[..18]);
        }
        S::Google => {
            out.push_str("Cj0KCQjw");
            push_base64url(&mut out, &bytes[..21]);
        }
        S::Snap => {
            let h = hex::encode(&bytes[..16]);
            out.push_str(&format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ));
        }
        S::Generic => {
            out.push_str("clk_");
            out.push_str(&hex::encode(&bytes[..12]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix64_is_injective_on_a_sample() {
        let mut seen: Vec<u64> = (0..100_000u64)
            .map(|i| unique_code(SALT_TOUCH, 3, i >> 4, i & 15))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 100_000);
    }

    #[test]
    fn person_identifiers_are_normalized() {
        let p = Person::new(123, [23, 33], 415);
        assert_eq!(p.email, "user123.x7@example.com");
        assert_eq!(p.phone.len(), 11);
        assert!(p.phone.starts_with("1415"));
        assert!(p.phone.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(p.external_id, "cust-000123");
        let h = sha256_hex(&p.email);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn click_ids_have_platform_shapes() {
        use crate::ClickIdStyle as S;
        assert!(click_id(S::Tiktok, 1, 2, 0).starts_with("E.C.P."));
        assert!(click_id(S::Meta, 1, 2, 1_785_000_000_000).starts_with("fb.1.1785000000000.IwAR"));
        assert!(click_id(S::Google, 1, 2, 0).starts_with("Cj0KCQjw"));
        assert_eq!(click_id(S::Snap, 1, 2, 0).len(), 36);
        assert_ne!(click_id(S::Google, 1, 2, 0), click_id(S::Google, 2, 2, 0));
    }
}

//! Identifier keys: the four ways a touch and a conversion can match, and the compact
//! 128-bit key each identifier value is compared by.
//!
//! `em`, `ph` and `external_id` are stored as keyed BLAKE3 digests (32 uniformly random
//! bytes): their first 16 bytes are already a perfect 128-bit hash, so they are taken as they
//! are. `click_id` is free text and is hashed with BLAKE3. The kind is mixed into the key so
//! an `em` never meets a `ph`. Two different identifiers share a key with probability about
//! 2⁻¹²⁸ per pair, which is what "exact" means here.

use std::hash::{BuildHasherDefault, Hasher};

/// How a touch matched a conversion, strongest first (SPEC section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MatchKey {
    /// The platform click id.
    ClickId = 0,
    /// The hashed email.
    Em = 1,
    /// The hashed phone.
    Ph = 2,
    /// The advertiser's own customer id (hashed).
    ExternalId = 3,
}

impl MatchKey {
    /// Every key, strongest first.
    pub const ALL: [MatchKey; 4] = [MatchKey::ClickId, MatchKey::Em, MatchKey::Ph, MatchKey::ExternalId];

    /// The name stored in `attributed_conversions.match_key` (also the column name).
    pub fn name(self) -> &'static str {
        match self {
            MatchKey::ClickId => "click_id",
            MatchKey::Em => "em",
            MatchKey::Ph => "ph",
            MatchKey::ExternalId => "external_id",
        }
    }

    pub(crate) fn from_u8(v: u8) -> MatchKey {
        MatchKey::ALL[v as usize]
    }

    fn salt(self) -> u128 {
        // Distinct odd constants (from the digits of π) per kind.
        const SALTS: [u128; 4] = [
            0x243F_6A88_85A3_08D3_1319_8A2E_0370_7344,
            0xA409_3822_299F_31D0_082E_FA98_EC4E_6C89,
            0x4528_21E6_38D0_1377_BE54_66CF_34E9_0C6D,
            0xC0AC_29B7_C97C_50DD_3F84_D5B5_B547_0917,
        ];
        SALTS[self as usize]
    }
}

/// The key of a stored (32-byte digest) identifier of kind `kind`.
pub(crate) fn digest_key(kind: MatchKey, digest: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(b) ^ kind.salt()
}

/// The key of a click id.
pub(crate) fn click_key(click_id: &str) -> u128 {
    let h = blake3::hash(click_id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    u128::from_le_bytes(b) ^ MatchKey::ClickId.salt()
}

/// A hasher for keys that are already uniformly random: it keeps 64 of their bits.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only used for non-key types; FNV-1a keeps it correct.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

/// A `HashMap` over random keys.
pub(crate) type KeyMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<KeyHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_never_collide_and_order_is_strength() {
        let d = [7u8; 32];
        assert_ne!(digest_key(MatchKey::Em, &d), digest_key(MatchKey::Ph, &d));
        assert_eq!(click_key("fb.1.abc"), click_key("fb.1.abc"));
        assert_ne!(click_key("fb.1.abc"), click_key("fb.1.abd"));
        assert!(MatchKey::ClickId < MatchKey::Em && MatchKey::Em < MatchKey::Ph && MatchKey::Ph < MatchKey::ExternalId);
    }
}

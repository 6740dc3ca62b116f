//! Key functions: turn the key a caller uses into the key memcached sees.
//!
//! Every key newcache sends goes through a [`KeyFunction`] and is then checked by
//! [`make_key`]: at most 250 bytes, no space, no control character. A key that fails is a
//! typed [`InvalidKey`] error and nothing reaches the server.
//!
//! Two key functions are built in:
//! - [`HashedKey`] (the default, django-newcache's): `{flavor}-{version}-{sha1 hex of the key}`.
//!   Any key, of any length and in any script, becomes a legal 40-odd byte key; bumping the
//!   version invalidates everything; flavors (dev, staging, prod) share a cluster without
//!   colliding.
//! - [`PrefixedKey`] (Django's own default): `{prefix}:{version}:{key}`, readable on the server,
//!   so it is validated like any other key.
//!
//! Any `Fn(&str) -> String` is a key function too, as Django's `KEY_FUNCTION` /
//! django-newcache's `CACHE_KEY_MODULE` were.
//!
//! ```
//! use newcache_keyfn::{make_key, HashedKey, PrefixedKey};
//!
//! let hashed = HashedKey::new("test", 1);
//! let key = make_key(&hashed, "games").unwrap();
//! assert_eq!(key, b"test-1-dd27204535de317c6202952eeb2043fad52e3fec");
//!
//! let django = PrefixedKey::new("site", 3);
//! assert_eq!(make_key(&django, "games").unwrap(), b"site:3:games");
//! assert!(make_key(&django, "two words").is_err()); // a space would break the protocol
//!
//! let custom = |key: &str| format!("v7/{}", key.to_lowercase());
//! assert_eq!(make_key(&custom, "Games").unwrap(), b"v7/games");
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable
    )
)]
#![forbid(unsafe_code)]

use std::fmt;

pub use newcache_transport::KeyError;
use sha1::{Digest, Sha1};

/// Turns a caller's key into the bytes sent to memcached.
///
/// Implementations append the wire key to `out` (which may hold other bytes already) and must
/// be deterministic: the same key always gives the same wire key. They need not validate:
/// [`make_key`] checks every result.
pub trait KeyFunction: Send + Sync {
    /// Appends the wire key for `key` to `out`.
    fn write_key(&self, key: &str, out: &mut Vec<u8>);

    /// True when whether a wire key is valid does not depend on the caller's key: every key
    /// it makes is valid, or none is (a hash of the key behind a fixed prefix). A multi-get
    /// may then send its first keys while it makes the rest, since a refusal can only come
    /// at the first key, before anything is sent; the cache then checks only the first key
    /// of a multi-get itself, and the transport checks each key it sends (an invalid one
    /// is refused there, with its wire key, not the caller's). False (the default): every
    /// key of a multi-get is made and checked before any is sent.
    fn validity_is_fixed(&self) -> bool {
        false
    }

    /// Appends the wire keys of `keys` to `out`, one after the other, and pushes onto
    /// `ends` where each ends in `out`: the same bytes as [`write_key`](Self::write_key) on
    /// each key in turn, which the default does. A key function that makes several keys
    /// faster together overrides it ([`HashedKey`] makes four keys side by side). A
    /// multi-get hands it a few keys at a time, and makes them again one at a time with
    /// `write_key` if it does not get back one end per key, in order, the last at the end
    /// of `out`.
    fn write_keys(&self, keys: &[&str], out: &mut Vec<u8>, ends: &mut Vec<usize>) {
        write_keys_one_at_a_time(self, keys, out, ends);
    }
}

/// [`KeyFunction::write_keys`] done key by key with `kf`'s `write_key`: the method's default,
/// and what a multi-get falls back to when an override did not give back one end per key.
pub fn write_keys_one_at_a_time(
    kf: &(impl KeyFunction + ?Sized),
    keys: &[&str],
    out: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) {
    for key in keys {
        kf.write_key(key, out);
        ends.push(out.len());
    }
}

impl<F> KeyFunction for F
where
    F: Fn(&str) -> String + Send + Sync,
{
    fn write_key(&self, key: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(self(key).as_bytes());
    }
}

/// A key the key function turned into something memcached cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cache key {} became wire key {}, which memcached cannot take: {reason}; use a hashing key function (the default) or a shorter key without spaces or control characters", newcache_transport::Abridged(.key), newcache_transport::Abridged(.wire))]
pub struct InvalidKey {
    /// The caller's key.
    pub key: String,
    /// The wire key the key function produced, lossily decoded.
    pub wire: String,
    /// Why memcached cannot take it.
    pub reason: KeyError,
}

/// Runs `kf` on `key` and validates the result.
pub fn make_key(kf: &(impl KeyFunction + ?Sized), key: &str) -> Result<Vec<u8>, InvalidKey> {
    let mut out = Vec::with_capacity(64);
    write_valid_key(kf, key, &mut out)?;
    Ok(out)
}

/// Like [`make_key`], but appends to `out` (for building many keys in one buffer). On error
/// `out` is left as it was.
pub fn write_valid_key(
    kf: &(impl KeyFunction + ?Sized),
    key: &str,
    out: &mut Vec<u8>,
) -> Result<(), InvalidKey> {
    let start = out.len();
    kf.write_key(key, out);
    let checked = check_wire_key(key, out.get(start..).unwrap_or_default());
    if checked.is_err() {
        out.truncate(start);
    }
    checked
}

/// Checks `wire`, the wire key a key function made of `key`, as [`write_valid_key`] does:
/// for a caller that makes many keys first and checks them after.
#[inline]
pub fn check_wire_key(key: &str, wire: &[u8]) -> Result<(), InvalidKey> {
    newcache_transport::validate_key(wire).map_err(|reason| InvalidKey {
        key: key.to_owned(),
        wire: String::from_utf8_lossy(wire).into_owned(),
        reason,
    })
}

/// django-newcache's key function: `{flavor}-{version}-{sha1 hex of the UTF-8 key}`.
///
/// The flavor defaults to empty and the version to 1, so `HashedKey::default()` gives
/// `-1-<sha1>`. The flavor is used as given: keep it free of spaces and control characters
/// (and under about 150 bytes) or every key will be refused.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedKey {
    /// Prefix that separates deployments sharing a cluster (`dev`, `staging`, `prod`).
    pub flavor: String,
    /// Cache version; bumping it invalidates every key. Any text, as django-newcache's
    /// `CACHE_VERSION` (`1`, `v2`); numbers are written in decimal.
    pub version: String,
}

impl HashedKey {
    /// A hashed key function with this flavor and version (`2`, or a string like `"v2"`).
    pub fn new(flavor: impl Into<String>, version: impl fmt::Display) -> Self {
        HashedKey {
            flavor: flavor.into(),
            version: version.to_string(),
        }
    }
}

impl Default for HashedKey {
    fn default() -> Self {
        HashedKey::new("", 1)
    }
}

impl fmt::Debug for HashedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashedKey({:?}-{}-<sha1>)", self.flavor, self.version)
    }
}

/// The eight lowercase hex digits of `word`, most significant first, made in one `u64`:
/// each nibble spread into a byte of its own, then each byte moved to its ASCII digit (`'0'`
/// plus the nibble, and 39 more for 10 to 15, which lands on `'a'` to `'f'`). Against a
/// table of each byte's two digits written a byte at a time: 13 instructions less per key
/// (callgrind, `get_many_loop hcache`); in `perf`, `write_key`'s share beside SHA-1's
/// compression function stayed where it was (0.75 of it), most of it waiting on the block's
/// bytes, stored one key at a time, before the compression function loads them whole.
fn hex_digits(word: u32) -> [u8; 8] {
    let x = u64::from(word);
    // 0xAABB_CCDD -> 0x0000_AABB_0000_CCDD -> 0x00AA_00BB_00CC_00DD -> 0x0A0A_0B0B_0C0C_0D0D
    // (the nibbles of 0xAA being A and A): every nibble in a byte of its own, in order.
    let x = ((x & 0xffff_0000) << 16) | (x & 0xffff);
    let x = ((x & 0x0000_ff00_0000_ff00) << 8) | (x & 0x0000_00ff_0000_00ff);
    let x = ((x & 0x00f0_00f0_00f0_00f0) << 4) | (x & 0x000f_000f_000f_000f);
    // 1 in each byte whose nibble is 10 or more: adding 6 carries it into the byte's bit 4.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// SHA-1's state before the first block.
const SHA1_START: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];

/// `bytes` padded into SHA-1's one last block, when they fit one (55 bytes or fewer, with
/// the 1 bit after them and their length in bits as the block's last 8 bytes): nearly
/// every cache key, hashed then by one call of the compression function, without the
/// streaming hasher's buffering (`write_key` of 100 keys of 7 bytes took 6.8 µs instead of
/// 7.5 µs, a loop of 200,000 rounds, release build).
fn one_block(bytes: &[u8]) -> Option<[u8; 64]> {
    /// The most bytes one 64-byte block holds with its padding.
    const ONE_BLOCK: usize = 55;
    if bytes.len() > ONE_BLOCK {
        return None;
    }
    let mut block = [0u8; 64];
    let (data, padding) = block.split_at_mut(bytes.len());
    data.copy_from_slice(bytes);
    if let Some(marker) = padding.first_mut() {
        *marker = 0x80;
    }
    let bits = u64::try_from(bytes.len()).unwrap_or_default() * 8;
    let (_, length) = block.split_at_mut(ONE_BLOCK + 1);
    length.copy_from_slice(&bits.to_be_bytes());
    Some(block)
}

/// The SHA-1 digest of `bytes`, as the state's five words.
fn sha1(bytes: &[u8]) -> [u32; 5] {
    match one_block(bytes) {
        Some(block) => {
            let mut state = SHA1_START;
            sha1::compress(&mut state, &[block.into()]);
            state
        }
        None => sha1_streamed(bytes),
    }
}

/// The SHA-1 digest of bytes longer than one block, by the streaming hasher, as the state's
/// five words.
fn sha1_streamed(bytes: &[u8]) -> [u32; 5] {
    let digest: [u8; 20] = Sha1::digest(bytes).into();
    let mut state = [0u32; 5];
    for (word, four) in state.iter_mut().zip(digest.chunks_exact(4)) {
        *word = four.try_into().map(u32::from_be_bytes).unwrap_or_default();
    }
    state
}

/// How many keys [`HashedKey::write_keys`] hashes side by side.
const SIDE_BY_SIDE: usize = 4;

impl HashedKey {
    /// Appends `{flavor}-{version}-` and the digest's 40 hex digits.
    fn write_digest(&self, digest: [u32; 5], out: &mut Vec<u8>) {
        out.reserve(self.flavor.len() + 12 + 40);
        out.extend_from_slice(self.flavor.as_bytes());
        out.push(b'-');
        out.extend_from_slice(self.version.as_bytes());
        out.push(b'-');
        // Hex into a stack buffer first: one copy into `out`, no capacity check per digit.
        let mut hex = [[0u8; 8]; 5];
        for (digits, word) in hex.iter_mut().zip(digest) {
            *digits = hex_digits(word);
        }
        out.extend_from_slice(hex.as_flattened());
    }
}

impl KeyFunction for HashedKey {
    fn write_key(&self, key: &str, out: &mut Vec<u8>) {
        self.write_digest(sha1(key.as_bytes()), out);
    }

    /// Four keys at a time: their blocks first, then the four compressions back to back,
    /// then the four keys' hex. 100 keys of 14 to 16 bytes: 5.3 µs instead of 6.4 µs to
    /// 6.5 µs one at a time (criterion, `cargo bench -p newcache-benches --bench keyfn --
    /// hashed_100`, AMD EPYC with SHA-NI). The compressions alone, of 100 blocks made
    /// beforehand, took 2.7 µs in either order (a plain loop), so what this saves is in the
    /// steps around them: a block's bytes stored just before its compression loads them,
    /// its hex written just after. Two and eight at a time were no faster than four.
    fn write_keys(&self, keys: &[&str], out: &mut Vec<u8>, ends: &mut Vec<usize>) {
        for four in keys.chunks(SIDE_BY_SIDE) {
            let mut digests = [SHA1_START; SIDE_BY_SIDE];
            let mut blocks = [None; SIDE_BY_SIDE];
            for ((digest, block), key) in digests.iter_mut().zip(&mut blocks).zip(four) {
                *block = one_block(key.as_bytes());
                if block.is_none() {
                    *digest = sha1_streamed(key.as_bytes());
                }
            }
            for (digest, block) in digests.iter_mut().zip(blocks) {
                if let Some(block) = block {
                    sha1::compress(digest, &[block.into()]);
                }
            }
            for (digest, _) in digests.into_iter().zip(four) {
                self.write_digest(digest, out);
                ends.push(out.len());
            }
        }
    }

    /// The flavor and the version are the same for every key, and the rest is 40 hex digits.
    fn validity_is_fixed(&self) -> bool {
        true
    }
}

/// Django's default key function: `{prefix}:{version}:{key}`, readable on the server.
///
/// The key is used as given, so a key with a space, a control character, or one that makes
/// the whole over 250 bytes is refused by [`make_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixedKey {
    /// Django's `KEY_PREFIX`.
    pub prefix: String,
    /// Django's `VERSION` (written in decimal when a number).
    pub version: String,
}

impl PrefixedKey {
    /// A prefixed key function with this prefix and version.
    pub fn new(prefix: impl Into<String>, version: impl fmt::Display) -> Self {
        PrefixedKey {
            prefix: prefix.into(),
            version: version.to_string(),
        }
    }
}

impl Default for PrefixedKey {
    /// No prefix, version 1: Django's defaults.
    fn default() -> Self {
        PrefixedKey::new("", 1)
    }
}

impl KeyFunction for PrefixedKey {
    fn write_key(&self, key: &str, out: &mut Vec<u8>) {
        out.reserve(self.prefix.len() + key.len() + 12);
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b':');
        out.extend_from_slice(self.version.as_bytes());
        out.push(b':');
        out.extend_from_slice(key.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kf: &impl KeyFunction, k: &str) -> String {
        String::from_utf8(make_key(kf, k).unwrap()).unwrap()
    }

    #[test]
    fn the_one_block_sha1_is_sha1_on_both_sides_of_the_block() {
        // 55 bytes is the most one padded block holds; 56 and up take the streaming hasher.
        for len in 0..=200 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let streamed: [u8; 20] = Sha1::digest(&bytes).into();
            let words = sha1(&bytes);
            let one_block: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            assert_eq!(one_block, streamed, "{len} bytes");
        }
        // The empty key's digest, as every SHA-1 gives it.
        let empty = HashedKey::default();
        assert_eq!(
            key(&empty, ""),
            "-1-da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }

    #[test]
    fn keys_made_together_are_the_keys_made_one_at_a_time() {
        // Short and long (more than one block) keys mixed, in every count around the four
        // hashed side by side, after bytes already in the buffer.
        let keys: Vec<String> = (0..11)
            .map(|i| "héllo wörld ".repeat(i * 2) + &i.to_string())
            .collect();
        for kf in [HashedKey::new("prod", "v2"), HashedKey::default()] {
            for count in 0..=keys.len() {
                let some: Vec<&str> = keys.iter().take(count).map(String::as_str).collect();
                let (mut out, mut ends) = (b"before".to_vec(), vec![6]);
                kf.write_keys(&some, &mut out, &mut ends);
                let mut one_at_a_time = (b"before".to_vec(), vec![6]);
                for key in &some {
                    kf.write_key(key, &mut one_at_a_time.0);
                    one_at_a_time.1.push(one_at_a_time.0.len());
                }
                assert_eq!((out, ends), one_at_a_time, "{count} keys");
            }
        }
        // The default method, for a key function that does not override it.
        let upper = |key: &str| key.to_uppercase();
        let (mut out, mut ends) = (Vec::new(), Vec::new());
        upper.write_keys(&["ab", "", "c"], &mut out, &mut ends);
        assert_eq!((out, ends), (b"ABC".to_vec(), vec![2, 2, 3]));
    }

    #[test]
    fn hex_digits_are_every_nibble_in_lowercase_in_order() {
        for nibble in 0..16u32 {
            for at in 0..8 {
                let word = (nibble << (4 * at)) | (0x5a5a_5a5a & !(0xf << (4 * at)));
                let digits = hex_digits(word);
                assert_eq!(
                    std::str::from_utf8(&digits).unwrap(),
                    format!("{word:08x}"),
                    "{word:#x}"
                );
            }
        }
        for word in [
            0,
            u32::MAX,
            0x0123_4567,
            0x89ab_cdef,
            0xdead_beef,
            0x9f0a_a0f9,
        ] {
            assert_eq!(
                hex_digits(word),
                format!("{word:08x}").as_bytes(),
                "{word:#x}"
            );
        }
    }

    #[test]
    fn a_hashed_key_is_valid_or_refused_whatever_the_callers_key() {
        let long = "k".repeat(1000);
        let keys = [
            "",
            "a",
            "two words",
            "line\nbreak",
            "nul\0",
            "héllo",
            long.as_str(),
        ];
        for kf in [
            HashedKey::new("prod", "v2"),
            HashedKey::new("bad flavor", 1),
        ] {
            assert!(kf.validity_is_fixed());
            let first = make_key(&kf, "").is_ok();
            for k in keys {
                assert_eq!(make_key(&kf, k).is_ok(), first, "{kf:?} {k:?}");
            }
        }
        assert!(make_key(&HashedKey::new("prod", "v2"), "two words").is_ok());
        // A readable key is valid or not by the caller's key.
        let django = PrefixedKey::new("site", 1);
        assert!(!django.validity_is_fixed());
        assert!(make_key(&django, "a").is_ok() && make_key(&django, "two words").is_err());
    }

    #[test]
    fn hashed_key_matches_the_golden_vectors() {
        let kf = HashedKey::new("test", 1);
        assert_eq!(
            key(&kf, "games"),
            "test-1-dd27204535de317c6202952eeb2043fad52e3fec"
        );
        assert_eq!(
            key(&kf, "hello world"),
            "test-1-2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"
        );
        assert_eq!(
            key(&kf, "ünïcode ключ"),
            "test-1-d76f84760ebe9734977e613fdc5ecbb884dd3925"
        );
    }

    #[test]
    fn hashed_key_defaults_to_empty_flavor_and_version_1() {
        assert_eq!(
            key(&HashedKey::default(), "games"),
            "-1-dd27204535de317c6202952eeb2043fad52e3fec"
        );
    }

    #[test]
    fn staging_version_2_reads_its_own_keys() {
        let staging = key(&HashedKey::new("staging", 2), "games");
        assert_eq!(
            staging,
            "staging-2-dd27204535de317c6202952eeb2043fad52e3fec"
        );
        assert_ne!(staging, key(&HashedKey::new("prod", 2), "games"));
        assert_ne!(staging, key(&HashedKey::new("staging", 3), "games"));
    }

    #[test]
    fn any_key_length_becomes_legal_when_hashed() {
        let long = "x".repeat(10_000);
        assert_eq!(key(&HashedKey::new("p", 4_294_967_295u32), &long).len(), 53);
        assert_eq!(key(&HashedKey::new("", 0), "").len(), 43);
    }

    #[test]
    fn prefixed_key_is_djangos_format() {
        assert_eq!(key(&PrefixedKey::new("site", 1), "games"), "site:1:games");
        assert_eq!(key(&PrefixedKey::new("", 10), "ключ"), ":10:ключ");
    }

    #[test]
    fn bad_wire_keys_are_typed_errors_naming_the_key() {
        let kf = PrefixedKey::new("site", 1);
        let err = make_key(&kf, "two words").unwrap_err();
        assert_eq!(err.key, "two words");
        assert_eq!(err.wire, "site:1:two words");
        assert_eq!(
            err.reason,
            KeyError::ForbiddenByte {
                byte: b' ',
                offset: 10
            }
        );
        assert!(err.to_string().contains("two words"));
        let err = make_key(&kf, &"k".repeat(245)).unwrap_err();
        assert_eq!(err.reason, KeyError::TooLong { len: 252 });
        let err = make_key(&kf, "tab\there").unwrap_err();
        assert!(matches!(
            err.reason,
            KeyError::ForbiddenByte { byte: b'\t', .. }
        ));
    }

    #[test]
    fn a_failed_key_leaves_the_buffer_as_it_was() {
        let mut buf = b"keep".to_vec();
        assert!(write_valid_key(&PrefixedKey::default(), "a b", &mut buf).is_err());
        assert_eq!(buf, b"keep");
        write_valid_key(&PrefixedKey::default(), "ab", &mut buf).unwrap();
        assert_eq!(buf, b"keep:1:ab");
    }

    #[test]
    fn closures_and_boxed_key_functions_plug_in() {
        let upper = |k: &str| k.to_uppercase();
        assert_eq!(key(&upper, "abc"), "ABC");
        let boxed: Box<dyn KeyFunction> = Box::new(HashedKey::new("b", 1));
        assert_eq!(
            make_key(boxed.as_ref(), "games").unwrap(),
            b"b-1-dd27204535de317c6202952eeb2043fad52e3fec"
        );
        let empty = |_: &str| String::new();
        assert_eq!(make_key(&empty, "x").unwrap_err().reason, KeyError::Empty);
    }

    #[test]
    fn versions_may_be_text_as_django_newcache_allows() {
        assert_eq!(
            make_key(&HashedKey::new("", "v2"), "games").unwrap(),
            b"-v2-dd27204535de317c6202952eeb2043fad52e3fec"
        );
        assert_eq!(
            make_key(&PrefixedKey::new("site", 3), "games").unwrap(),
            b"site:3:games"
        );
    }
}

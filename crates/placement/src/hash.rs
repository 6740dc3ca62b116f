//! libmemcached's key hashes (libhashkit), byte for byte.
//!
//! libhashkit reads keys through a C `char`, which is signed on the platforms libmemcached is
//! built for: where a hash adds or XORs a byte into a wider integer, bytes of 0x80 and above
//! are sign-extended first. Every function here does the same, so non-ASCII keys land where
//! libmemcached puts them (and not where a textbook implementation would).

use md5::{Digest, Md5};

/// A byte as libhashkit widens it to 32 bits: through a signed `char`.
fn signed32(byte: u8) -> u32 {
    byte as i8 as i32 as u32
}

/// Bob Jenkins' one-at-a-time hash: libmemcached's `default`.
pub fn one_at_a_time(key: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    for &byte in key {
        hash = hash.wrapping_add(signed32(byte));
        hash = hash.wrapping_add(hash << 10);
        hash ^= hash >> 6;
    }
    hash = hash.wrapping_add(hash << 3);
    hash ^= hash >> 11;
    hash.wrapping_add(hash << 15)
}

/// The MD5 digest of `key`.
pub fn md5_digest(key: &[u8]) -> [u8; 16] {
    Md5::digest(key).into()
}

/// Four bytes of an MD5 digest as a little-endian word: `alignment` 0 takes bytes 0..4, 1
/// takes 4..8, and so on (libmemcached's ketama point and `md5` key hash).
pub fn md5_word(digest: &[u8; 16], alignment: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(bytes) = digest.get(alignment * 4..alignment * 4 + 4) {
        word.copy_from_slice(bytes);
    }
    u32::from_le_bytes(word)
}

/// libmemcached's `md5`: the first four digest bytes, little-endian.
pub fn md5(key: &[u8]) -> u32 {
    md5_word(&md5_digest(key), 0)
}

// Runs at compile time only (it initializes a static): an index out of bounds would fail the
// build, never a run.
#[allow(clippy::indexing_slicing)]
const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32_TABLE: [u32; 256] = crc32_table();

/// The standard (zlib) CRC-32 of `key`.
pub fn crc32(key: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in key {
        let index = ((crc ^ u32::from(byte)) & 0xff) as usize;
        crc = (crc >> 8) ^ CRC32_TABLE.get(index).copied().unwrap_or(0);
    }
    !crc
}

/// libmemcached's `crc`: bits 16..31 of the CRC-32, so a value below 0x8000.
pub fn crc(key: &[u8]) -> u32 {
    (crc32(key) >> 16) & 0x7fff
}

const FNV_32_INIT: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;
const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0100_0000_01b3;

/// libmemcached's `fnv1_32`.
pub fn fnv1_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_INIT, |hash, &b| {
        hash.wrapping_mul(FNV_32_PRIME) ^ signed32(b)
    })
}

/// libmemcached's `fnv1a_32`.
pub fn fnv1a_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_INIT, |hash, &b| {
        (hash ^ signed32(b)).wrapping_mul(FNV_32_PRIME)
    })
}

/// libmemcached's `fnv1_64`: 64-bit FNV-1, truncated to its low 32 bits.
pub fn fnv1_64(key: &[u8]) -> u32 {
    let hash = key.iter().fold(FNV_64_INIT, |hash, &b| {
        hash.wrapping_mul(FNV_64_PRIME) ^ (b as i8 as i64 as u64)
    });
    hash as u32
}

/// libmemcached's `fnv1a_64`, which (unlike its name) runs in 32 bits with the 64-bit
/// constants truncated: libhashkit's own quirk, kept so keys land where it puts them.
pub fn fnv1a_64(key: &[u8]) -> u32 {
    let init = FNV_64_INIT as u32;
    let prime = FNV_64_PRIME as u32;
    key.iter()
        .fold(init, |hash, &b| (hash ^ signed32(b)).wrapping_mul(prime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32 catalogue's check: crc32("123456789") = 0xCBF43926.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc(b"123456789"), (0xcbf4_3926 >> 16) & 0x7fff);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn md5_takes_the_first_word_little_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(md5(b""), 0xd98c_1dd4);
        let d = md5_digest(b"");
        assert_eq!(md5_word(&d, 3), 0x7e42_f8ec);
        assert_eq!(
            md5_word(&d, 4),
            0,
            "out of range words are zero, not a panic"
        );
    }

    #[test]
    fn fnv_matches_published_vectors_on_ascii() {
        // FNV test vectors: fnv1_32("a") = 0x050c5d7e, fnv1a_32("a") = 0xe40c292c,
        // fnv1_64("a") = 0xaf63bd4c8601b7be.
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1_64(b"a"), 0x8601_b7be);
        assert_eq!(fnv1_32(b""), FNV_32_INIT);
    }

    #[test]
    fn high_bytes_are_sign_extended() {
        // 0xff as a signed char is -1: one-at-a-time adds u32::MAX, FNV XORs it.
        let mut h: u32 = u32::MAX;
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
        h = h.wrapping_add(h << 3);
        h ^= h >> 11;
        h = h.wrapping_add(h << 15);
        assert_eq!(one_at_a_time(&[0xff]), h);
        assert_eq!(
            fnv1a_32(&[0xff]),
            (FNV_32_INIT ^ u32::MAX).wrapping_mul(FNV_32_PRIME)
        );
        assert_ne!(
            fnv1a_32(&[0xff]),
            (FNV_32_INIT ^ 0xff).wrapping_mul(FNV_32_PRIME)
        );
    }
}

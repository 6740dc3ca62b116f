//! Key placement: which server of a cluster holds a key. Pure functions, no I/O.
//!
//! The default is libmemcached's: modula distribution over its one-at-a-time hash, so a
//! Rust service and pylibmc/libmemcached clients with the same server list (in the same order)
//! put every key on the same server.

/// libmemcached's one-at-a-time hash (Bob Jenkins'), computed as libmemcached does over
/// *signed* chars: bytes of 0x80 and above are sign-extended before they are added.
pub fn one_at_a_time(key: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    for &byte in key {
        // `(uint32_t)(char)byte` in C on platforms with a signed char.
        hash = hash.wrapping_add(byte as i8 as i32 as u32);
        hash = hash.wrapping_add(hash << 10);
        hash ^= hash >> 6;
    }
    hash = hash.wrapping_add(hash << 3);
    hash ^= hash >> 11;
    hash.wrapping_add(hash << 15)
}

/// The server index for `key` among `servers` servers: libmemcached's modula distribution
/// (one server takes every key without hashing).
pub fn modula(key: &[u8], servers: usize) -> usize {
    if servers <= 1 {
        return 0;
    }
    let servers = u32::try_from(servers).unwrap_or(u32::MAX);
    (one_at_a_time(key) % servers) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_a_time_matches_the_published_algorithm_on_ascii() {
        // Textbook one-at-a-time of "a": sum=97, then the mixing steps.
        let mut h: u32 = 97;
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
        h = h.wrapping_add(h << 3);
        h ^= h >> 11;
        h = h.wrapping_add(h << 15);
        assert_eq!(one_at_a_time(b"a"), h);
        assert_eq!(one_at_a_time(b""), 0);
    }

    #[test]
    fn high_bytes_are_sign_extended_as_libmemcached_does() {
        // 0xff as a signed char is -1: adding u32::MAX, not 255.
        let mut h: u32 = u32::MAX;
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
        h = h.wrapping_add(h << 3);
        h ^= h >> 11;
        h = h.wrapping_add(h << 15);
        assert_eq!(one_at_a_time(&[0xff]), h);
    }

    #[test]
    fn modula_spreads_keys_and_one_server_takes_all() {
        assert_eq!(modula(b"anything", 1), 0);
        assert_eq!(modula(b"anything", 0), 0);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[modula(format!("key{i}").as_bytes(), 3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}

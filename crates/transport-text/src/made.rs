//! Multi-gets whose keys are made during the call ([`Transport::get_many_made`]): every key
//! is made (and checked) first, then the multi-get goes out whole; on a cluster of one
//! server it is read from the made keys themselves, with no list of them, and the caller's
//! work for when the request is out ([`MadeKeys::sent`]) runs while memcached answers.
//!
//! A large multi-get used to go out in two halves (b6c5f57), the first sent once its keys
//! were made, so that memcached answered it while the caller hashed the second half, each
//! half opened or closed by a tagged `mg`. On a quiet 2-vCPU VM (2026-12-03: the interleaved
//! bench's rounds within a few percent of each other) that lost a fifth of a hashed
//! `get_many(100)`: the second request woke memcached's thread a second time and the client
//! a second time, and a wake-up across vCPUs cost more there than the half of SHA-1 it hid
//! (about 4 µs). Measured (`NEWCACHE_BENCH_QUICK=1`, the interleaved bench's
//! `get_many_100`, four alternating runs of each build): the text `Cache` over the text
//! transport alone reading the same wire keys 0.70x to 0.71x in halves, 0.82x to 0.90x sent
//! whole; over raw libmemcached's short-key multi-get 0.57x to 0.59x against 0.68x to 0.73x;
//! `get_many_loop hcache` 125 to 139 µs per call against 102 to 117 µs. An earlier VM had
//! shown the halves ahead (0.82x to 0.86x against 0.76x to 0.81x); what they can win is half
//! the key function's time, what they lose where wake-ups are dear is several times that, so
//! the request goes whole.
//!
//! [`Transport::get_many_made`]: newcache_transport::Transport::get_many_made

use newcache_transport::{get_many_made_with, get_many_of_made, Found, MadeKeys, Result};

use crate::TextTransport;

impl TextTransport {
    /// [`Transport::get_many_made`](newcache_transport::Transport::get_many_made): every key
    /// made, then one multi-get of them (on one server, within one request's bytes, read from
    /// the made keys themselves, with `sent` told between writing it and reading the
    /// replies).
    pub(crate) fn get_many_made_whole(
        &self,
        keys: &mut dyn MadeKeys,
        found: &mut Found<'_>,
    ) -> Result<()> {
        if self.servers.len() != 1 {
            return get_many_made_with(keys, found, |keys, sent| self.get_many_then(keys, sent));
        }
        for i in 0..keys.count() {
            keys.make(i)?;
        }
        let keys: &dyn MadeKeys = keys;
        if !self.one_request(keys) {
            return get_many_of_made(keys, found, |keys, sent| self.get_many_then(keys, sent));
        }
        // Read from the made keys themselves: no list of them is made before the request
        // is out.
        let items = self.get_many_on_one_server(keys, &|| keys.sent())?;
        for (i, item) in items.into_iter().enumerate() {
            if let (Some(item), Some(key)) = (item, keys.key(i)) {
                found(i, key, item);
            }
        }
        Ok(())
    }
}

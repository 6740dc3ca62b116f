//! Multi-gets whose keys are made during the call ([`Transport::get_many_made`]): every key
//! is made first, then the multi-get of the list of them goes out whole, as a plain
//! `get_many` does, and the caller's work for when the request is out ([`MadeKeys::sent`])
//! runs while memcached answers.
//!
//! On one server the request used to be read from the made keys themselves, with no list
//! of them, but each step (the request's size, the keys' check, the request, the replies'
//! match, the hand-over) asked the maker for each key again through `dyn MadeKeys`. The
//! list is on the stack for up to [`KEYS_ON_STACK`] keys, so it allocates nothing (see
//! [`get_many_of_made`] for why that matters). With it, `get_many_loop`'s instructions per
//! `get_many` of 100 (callgrind, `valgrind --tool=callgrind get_many_loop MODE 200`, then
//! 1200, the difference over 1000 calls) went from 222,952 to 214,579 for the
//! identity-keyed `Cache` and from 408,119 to 400,661 for the hashed one; the transport's
//! own `get_many`, which now reads its slices directly too, from 134,021 to 129,405.
//!
//! [`KEYS_ON_STACK`]: newcache_transport::KEYS_ON_STACK
//! [`get_many_of_made`]: newcache_transport::get_many_of_made
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

use newcache_transport::{get_many_made_with, Found, MadeKeys, Result};

use crate::TextTransport;

impl TextTransport {
    /// [`Transport::get_many_made`](newcache_transport::Transport::get_many_made): every key
    /// made, then [`Transport::get_many`](newcache_transport::Transport::get_many) of them
    /// with `sent` told between writing the request and reading the replies (on one server,
    /// within one request's bytes).
    pub(crate) fn get_many_made_whole(
        &self,
        keys: &mut dyn MadeKeys,
        found: &mut Found<'_>,
    ) -> Result<()> {
        get_many_made_with(keys, found, |keys, sent| self.get_many_then(keys, sent))
    }
}

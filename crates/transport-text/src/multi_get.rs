//! Multi-gets: one `gets` (closed by a tagged `mg` on meta connections) or, for a few keys
//! on meta, one tagged `mg` per key; and the fast path for a cluster of one server.
//!
//! ## Made keys
//!
//! A multi-get whose keys are made during the call ([`Transport::get_many_made`]): every key
//! is made first, then the multi-get of the list of them goes out whole, as a plain
//! `get_many` does, and the caller's work for when the request is out
//! ([`MadeKeys::sent`]) runs while memcached answers.
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
//! [`MadeKeys::sent`]: newcache_transport::MadeKeys::sent

use newcache_transport::{check_key, Item, Result};

use crate::batch::{RoundLimit, KEY_OVERHEAD};
use crate::command::{Cmd, Mismatch, Outcome, Wire};
use crate::conn::{Acquire, Conn, Server};
use crate::errors::status_to_error;
use crate::exchange::Head;
use crate::proto::{meta, Decoder, Expect, Meta, Reply};
use crate::TextTransport;

impl TextTransport {
    /// `get_many` on a one-server cluster: one request (`gets` of every key, or one `mg`
    /// per key), its replies read straight into the result: nothing is allocated but the
    /// result and its values, and those once the request is out, so what the allocator does
    /// for them (glibc merges the small blocks the caller freed when a large one is asked
    /// for) overlaps the server's answer. Every key is checked first: a bad one sends
    /// nothing.
    pub(crate) fn get_many_on_one_server(
        &self,
        keys: &[&[u8]],
        sent: &dyn Fn(),
    ) -> Result<Vec<Option<Item>>> {
        for key in keys {
            check_key(key)?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.on_one_server(|server, conn, head| {
            self.multi_get_exchange(server, conn, keys, head, sent)
        })
    }

    /// True when a multi-get of `keys` is one request to the cluster's one server: within
    /// one round's request bytes ([`RoundLimit::VALUES`]).
    pub(crate) fn one_request(&self, keys: &[&[u8]]) -> bool {
        self.servers.len() == 1 && RoundLimit::VALUES.fits(keys.iter().map(|k| get_cost(k)))
    }

    /// Runs `exchange` over a connection to the cluster's one server (index 0): the server
    /// checked up, a connection checked out, the outcome classified (a connection closed
    /// without a reply may mean a command the server lacks) and reported to the cluster.
    pub(crate) fn on_one_server<T>(
        &self,
        exchange: impl FnOnce(&Server, Conn, &mut Head) -> Result<T>,
    ) -> Result<T> {
        let server = self.server(0)?;
        let ticket = self.cluster.check_up(0)?;
        let conn = match self.checkout(server) {
            Ok(conn) => conn,
            Err(Acquire::Busy(e)) => return Err(e),
            Err(Acquire::Failed(e)) => {
                let outcome = Err(e);
                self.cluster.report(0, ticket, &outcome);
                return outcome;
            }
        };
        let mut head = Head::default();
        let outcome = exchange(server, conn, &mut head);
        let outcome = self.classify_close(0, head, outcome);
        self.cluster.report(0, ticket, &outcome);
        outcome
    }

    /// Sends a multi-get of `keys` on `conn`, runs `sent`, and reads the replies into a
    /// result made after the request is out.
    pub(crate) fn multi_get_exchange(
        &self,
        server: &Server,
        mut conn: Conn,
        keys: &[&[u8]],
        head: &mut Head,
        sent: &dyn Fn(),
    ) -> Result<Vec<Option<Item>>> {
        let n = keys.len();
        let key_at = |m: usize| keys.get(m).copied();
        let each_key = || keys.iter().copied();
        conn.wbuf.clear();
        if gets_per_key(conn.wire, n) {
            let first = conn.opaque;
            for key in each_key() {
                let opaque = conn.next_opaque();
                meta::encode_get(&mut conn.wbuf, key, opaque);
            }
            *head = Head::of(&conn.wbuf);
            self.send(server, &mut conn)?;
            sent();
            let mut out = vec![None; n];
            let shortened = self.read_gets(server, &mut conn, each_key(), first, |m, item| {
                if let Some(slot) = out.get_mut(m) {
                    *slot = item;
                }
            })?;
            self.finish(server, conn, shortened)?;
            return Ok(out);
        }
        let closer = encode_multi_get(&mut conn, each_key());
        *head = Head::of(&conn.wbuf);
        self.send(server, &mut conn)?;
        sent();
        let mut out = vec![None; n];
        let shortened = self.read_multi_get(server, &mut conn, n, key_at, &mut out, closer)?;
        self.finish(server, conn, shortened)?;
        Ok(out)
    }

    /// Reads the replies to one `mg` per key, tagged from `first` on: each item (or miss)
    /// goes to `put(m, item)` for the `m`th key. An error line fails the call.
    pub(crate) fn read_gets<'k>(
        &self,
        server: &Server,
        conn: &mut Conn,
        keys: impl IntoIterator<Item = &'k [u8]>,
        first: u32,
        mut put: impl FnMut(usize, Option<Item>),
    ) -> Result<bool> {
        let mut shortened = false;
        let mut opaque = first;
        for (m, key) in keys.into_iter().enumerate() {
            let cmd = Cmd::Get(key);
            let mut decoder = Decoder::new(Expect::Meta);
            let (reply, short) = self.receive(server, conn, &mut decoder)?;
            shortened |= short;
            match crate::command::interpret(&cmd, Wire::Meta, reply, decoder.tag(), opaque)
                .map_err(|m| self.mismatch(server, m))?
            {
                Outcome::Item(item) => put(m, item),
                Outcome::Refused(status) => {
                    self.note_refusal(server, Wire::Meta, &status);
                    return Err(self.refusal(&server.label, &cmd, Wire::Meta, status));
                }
                other => {
                    return Err(self.mismatch(
                        server,
                        Mismatch(format!("{other:?} is not an answer to mg")),
                    ))
                }
            }
            opaque = opaque.wrapping_add(1);
        }
        Ok(shortened)
    }

    /// Reads a multi-get's reply: its `VALUE` block (every value of a key asked for, no
    /// key answered more often than asked, placed in `out[m]` for the `m`th key), and on a
    /// meta connection the tagged reply of the `mg` that closes it ([`encode_multi_get`]).
    /// Says whether the socket's read timeout was shortened.
    pub(crate) fn read_multi_get<'k>(
        &self,
        server: &Server,
        conn: &mut Conn,
        count: usize,
        key_at: impl Fn(usize) -> Option<&'k [u8]>,
        out: &mut [Option<Item>],
        closer: Option<(u32, &[u8])>,
    ) -> Result<bool> {
        let mut decoder = Decoder::with_capacity(Expect::Values, count);
        let (reply, mut shortened) = self.receive(server, conn, &mut decoder)?;
        match reply {
            Reply::Values(values) => {
                crate::command::place_values(*values, conn.wire, count, key_at, out)
                    .map_err(|m| self.mismatch(server, m))?;
            }
            Reply::Status(s) if s.is_error() => {
                return Err(status_to_error(server.label.clone(), s, "gets"))
            }
            other => {
                return Err(self.mismatch(
                    server,
                    Mismatch(format!("{other:?} is not an answer to a multi-get")),
                ))
            }
        }
        if let Some(closer) = closer {
            shortened |= self.read_marker(server, conn, closer)?;
        }
        Ok(shortened)
    }

    /// Reads the reply to a multi-get's tagged `mg` ([`meta::encode_marker`]) of `key`, sent
    /// with the token `opaque`: `HD` or `EN` carrying both, else the connection is out of
    /// step. Says whether the socket's read timeout was shortened.
    pub(crate) fn read_marker(
        &self,
        server: &Server,
        conn: &mut Conn,
        (opaque, key): (u32, &[u8]),
    ) -> Result<bool> {
        let mut decoder = Decoder::new(Expect::Meta);
        let (reply, shortened) = self.receive(server, conn, &mut decoder)?;
        match reply {
            Reply::Meta(Meta::Done | Meta::Miss) => decoder
                .tag()
                .check(opaque, key)
                .map_err(|e| self.mismatch(server, Mismatch(e.0)))?,
            other => {
                return Err(self.mismatch(
                    server,
                    Mismatch(format!("{other:?} where a multi-get's tagged mg was due")),
                ))
            }
        }
        Ok(shortened)
    }

    /// Checks every key (nothing is sent when one is bad), then groups their positions by
    /// server.
    pub(crate) fn keys_by_server(&self, keys: &[&[u8]]) -> Result<Vec<(usize, Vec<usize>)>> {
        for key in keys {
            check_key(key)?;
        }
        self.by_server(keys.len(), |i| keys.get(i).copied())
    }
}

/// The most keys a multi-get on a meta connection asks for with one `mg` each (every reply
/// tagged); more are one `gets` closed by a tagged `mg` ([`encode_multi_get`]). memcached
/// serves 20 commands of a connection per turn of its event loop (`-R`, default 20) and
/// writes their replies at once, so up to 20 `mg`s cost what one `gets` does; a pipeline of
/// 100 took 4 to 5 turns and writes (an earlier session's measurement, 254 µs for 100 keys
/// against 35 µs for one `gets` and 91 µs for a `gets` and its closing `mg`, which
/// memcached writes separately; its program was not kept, so the figures are not
/// reproducible as they stand: the interleaved bench's `get_many_100` rows measure the
/// result).
pub(crate) const META_GETS_PER_KEY: usize = 20;

/// True when a multi-get of `n` keys on a connection speaking `wire` is one `mg` per key.
pub(crate) fn gets_per_key(wire: Wire, n: usize) -> bool {
    wire == Wire::Meta && n <= META_GETS_PER_KEY
}

/// Appends a multi-get of `keys`: `gets <key>...`, and on a meta connection the tagged `mg`
/// of the last key that closes its reply ([`meta::encode_marker`]): one command for the
/// values, and right after them a token that no earlier reply carries. The `VALUE` lines
/// themselves are untagged; what holds them to this request is
/// [`place_values`](crate::command::place_values): each names a key asked, carries a CAS
/// unique, and on a meta connection comes in the order asked. What that cannot tell from
/// the server's own is a stray `VALUE`, CAS unique and all, of a key asked later that has
/// no value, and a `VALUE` dropped on the way reads as a miss; a multi-get of up to
/// [`META_GETS_PER_KEY`] keys, one tagged `mg` each, has neither gap.
/// Returns the closing token and key.
pub(crate) fn encode_multi_get<'k>(
    conn: &mut Conn,
    keys: impl Iterator<Item = &'k [u8]>,
) -> Option<(u32, &'k [u8])> {
    let opaque = &mut conn.opaque;
    encode_multi_get_into(&mut conn.wbuf, conn.wire, keys, || {
        let token = *opaque;
        *opaque = token.wrapping_add(1);
        token
    })
}

/// [`encode_multi_get`] into any buffer, in `wire`, the closing `mg` tagged with the token
/// `next_opaque` gives (called once, in meta only).
pub(crate) fn encode_multi_get_into<'k>(
    out: &mut Vec<u8>,
    wire: Wire,
    keys: impl Iterator<Item = &'k [u8]>,
    next_opaque: impl FnOnce() -> u32,
) -> Option<(u32, &'k [u8])> {
    out.extend_from_slice(b"gets");
    let mut last = None;
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key);
        last = Some(key);
    }
    out.extend_from_slice(b"\r\n");
    match (wire, last) {
        (Wire::Meta, Some(key)) => {
            let opaque = next_opaque();
            meta::encode_marker(out, key, opaque);
            Some((opaque, key))
        }
        _ => None,
    }
}

/// Request bytes of one key of a multi-get (the `gets` line, and the closing `mg` in meta).
pub(crate) fn get_cost(key: &[u8]) -> usize {
    key.len() + KEY_OVERHEAD
}

//! Multi-gets whose keys are made during the call ([`Transport::get_many_made`]): on a
//! cluster of one server, a large one goes out in two halves, the first sent as soon as its
//! keys are made, so memcached answers it while the caller makes the second; each half's
//! items are handed over as soon as its reply is read.
//!
//! Measured with the interleaved bench (`cargo bench -p newcache-benches --features binary
//! --bench interleaved`, `get_many_100`: the text `Cache` over the text transport alone
//! reading the same wire keys), thirteen runs each way, alternating: 0.82x to 0.86x in
//! halves, 0.76x to 0.81x sent at once. A first part of 32 keys of 100 gained nothing:
//! memcached answered it before the rest were made and sent, then woke again for them.
//! The async transport does not do this: two halves queued to its connection's task ran at
//! 0.66x to 0.69x of raw libmemcached's short-key multi-get, against 0.67x to 0.69x for one
//! request written on its direct path (four runs each, alternating).
//!
//! [`Transport::get_many_made`]: newcache_transport::Transport::get_many_made

use newcache_transport::{
    check_key, get_many_made_with, made_key, Error, Found, Item, MadeKeys, Result,
};

use crate::batch::RoundLimit;
use crate::conn::{Conn, Server};
use crate::exchange::Head;
use crate::multi_get::{encode_multi_get, get_cost};
use crate::TextTransport;

/// The fewest keys a multi-get is sent in halves for: below it, making the second half
/// takes less than the extra write costs.
pub(crate) const HALVES_FROM: usize = 64;

/// A part of a multi-get on the wire: its keys' range and its closing `mg`'s token.
#[derive(Clone, Copy, Default)]
struct Part {
    start: usize,
    end: usize,
    closer: Option<u32>,
}

impl TextTransport {
    /// [`Transport::get_many_made`]: in halves on a cluster of one server when there are
    /// [`HALVES_FROM`] keys or more; else every key made, then [`Transport::get_many`] (on
    /// one server, `sent` told between writing it and reading the replies).
    pub(crate) fn get_many_in_parts(
        &self,
        keys: &mut dyn MadeKeys,
        found: &mut Found<'_>,
    ) -> Result<()> {
        if self.servers.len() != 1 || keys.count() < HALVES_FROM {
            return get_many_made_with(keys, found, |keys, sent| self.get_many_then(keys, sent));
        }
        // The first key before any connection: a key function whose keys are all refused
        // (a bad prefix) then costs no connection, no probe, nothing sent.
        keys.make(0)?;
        check_key(made_key(keys, 0)?)?;
        let mut stopped = None;
        self.on_one_server(|server, conn, head| {
            self.parts_exchange(server, conn, keys, found, head, &mut stopped)
        })?;
        stopped.map_or(Ok(()), Err)
    }

    /// Sends the multi-get in rounds of at most [`RoundLimit::VALUES`]'s request bytes, each
    /// round in two parts (half the keys left, then the rest) sent as their keys are made
    /// (the first key is made already), and reads each round's replies before the next. A
    /// key that cannot be made (or is refused) goes to `stopped`: nothing more is sent, and
    /// the replies to what was sent are read.
    fn parts_exchange(
        &self,
        server: &Server,
        mut conn: Conn,
        keys: &mut dyn MadeKeys,
        found: &mut Found<'_>,
        head: &mut Head,
        stopped: &mut Option<Error>,
    ) -> Result<()> {
        let n = keys.count();
        let limit = RoundLimit::VALUES.request_bytes();
        // Keys made so far (the first, by the caller), and the next key to send.
        let (mut made, mut next) = (1, 0);
        let mut shortened = false;
        let mut slots: Vec<Option<Item>> = Vec::new();
        // A round's parts: the first half of the keys left, then the rest.
        let mut parts = [Part::default(); 2];
        while next < n && stopped.is_none() {
            let mut sent = 0;
            let mut round_bytes = 0usize;
            let mut full = false;
            while next < n && !full && stopped.is_none() && sent < parts.len() {
                let start = next;
                let mut end = if sent == 0 {
                    start + (n - start).div_ceil(2)
                } else {
                    n
                };
                for i in start..end {
                    if i == made {
                        if let Err(e) = keys.make(i).and_then(|()| check_key(made_key(keys, i)?)) {
                            *stopped = Some(e);
                            end = i;
                            break;
                        }
                        made += 1;
                    }
                    let cost = made_key(keys, i).map_or(0, get_cost);
                    if round_bytes.saturating_add(cost) > limit && (i > start || sent > 0) {
                        // Sent in the next round, when this one's replies are read.
                        full = true;
                        end = i;
                        break;
                    }
                    round_bytes += cost;
                }
                if end == start {
                    break;
                }
                conn.wbuf.clear();
                let made_keys: &dyn MadeKeys = keys;
                let closer = encode_multi_get(
                    &mut conn,
                    (start..end).map(|i| made_keys.key(i).unwrap_or_default()),
                )
                .map(|(opaque, _)| opaque);
                if start == 0 {
                    *head = Head::of(&conn.wbuf);
                }
                self.send(server, &mut conn)?;
                if let Some(part) = parts.get_mut(sent) {
                    *part = Part { start, end, closer };
                    sent += 1;
                }
                next = end;
            }
            if next >= n {
                // Nothing more goes out: the caller's own work overlaps the server's.
                keys.sent();
            }
            for part in parts.iter().take(sent) {
                let count = part.end - part.start;
                slots.clear();
                slots.resize(count, None);
                let made_keys: &dyn MadeKeys = keys;
                let key_at = |m: usize| made_keys.key(part.start + m);
                let closer = part
                    .closer
                    .and_then(|opaque| Some((opaque, key_at(count.checked_sub(1)?)?)));
                shortened |=
                    self.read_multi_get(server, &mut conn, count, key_at, &mut slots, closer)?;
                for (m, slot) in slots.iter_mut().enumerate() {
                    if let (Some(item), Some(key)) = (slot.take(), key_at(m)) {
                        found(part.start + m, key, item);
                    }
                }
            }
        }
        self.finish(server, conn, shortened)
    }
}

//! Multi-gets whose keys are made during the call ([`Transport::get_many_made`]): on a
//! cluster of one server, a large one goes out in two halves, the first sent as soon as its
//! keys are made, so memcached answers it while the caller makes the second; each half's
//! items are handed over as soon as its reply is read.
//!
//! On a meta connection each half carries one tagged `mg`: the first half's before its
//! `gets`, the second's after it. memcached writes the first half's reply (the tag, then
//! its `VALUE` block) in one write; a tag after each half cost it two writes per half, and
//! the client a wait for each. What the tags check:
//! - the opening tag, read first, proves that nothing before it (a duplicate, an older
//!   reply) is taken for the first half's answer;
//! - the closing tag, read last, proves that nothing was put inside the call's replies:
//!   bytes added anywhere before it push it out of its place. The first half's items are
//!   handed over before it is read, so a call that fails there hands over items that may
//!   not be the server's answer; [`Transport::get_many_made`] leaves such items to the
//!   caller to drop, and the cache drops everything a failed call handed over.
//!
//! Measured with the interleaved bench (`cargo bench -p newcache-benches --features binary
//! --bench interleaved`, `get_many_100`: the text `Cache` over the text transport alone
//! reading the same wire keys), alternating runs on a 2-core VM:
//! - a tag before the first half and after the second: 0.79x to 0.85x (eight runs);
//! - a tag after each half: 0.75x to 0.78x (eight runs);
//! - the whole request at once: 0.79x to 0.81x (twelve runs);
//! - the first half's items held until the second's tag is read (no tag on the first):
//!   0.76x to 0.78x (four runs): the overlap is the caller's work on the first half's values;
//! - a first part of 35, 42, 65 or 80 of 100 keys, tagged as above: 0.78x to 0.83x, against
//!   0.81x to 0.84x for 50 in the same runs (three runs each);
//! - the second half's items handed over before its closing tag is read (the tag's write
//!   overlapping their decoding): 0.81x to 0.83x, against 0.81x to 0.84x (four runs each),
//!   so they wait for it.
//!
//! With every key made before the call there is nothing to overlap the first half with:
//! the `Cache` through an identity key function (`newcache-text-identity`, whose keys are
//! all made and checked first) ran at 0.80x to 0.82x of the transport alone on the same keys
//! in halves and at 0.85x to 0.86x sent at once (three alternating runs each), so such a
//! multi-get goes out whole.
//!
//! On another VM of that kind, with a tag after each half: 0.82x to 0.86x in halves,
//! 0.76x to 0.81x sent at once (thirteen runs each). A first part of 32 keys of 100 gained
//! nothing: memcached answered it before the rest were made and sent, then woke again for
//! them. The async transport does not do this: two halves queued to its connection's task
//! ran at 0.66x to 0.69x of raw libmemcached's short-key multi-get, against 0.67x to 0.69x
//! for one request written on its direct path (four runs each, alternating).
//!
//! [`Transport::get_many_made`]: newcache_transport::Transport::get_many_made

use newcache_transport::{
    check_key, get_many_made_with, get_many_of_made, made_key, Error, Found, Item, MadeKeys, Result,
};

use crate::batch::RoundLimit;
use crate::conn::{Conn, Server};
use crate::exchange::Head;
use crate::multi_get::{encode_multi_get, encode_opened_multi_get, get_cost};
use crate::TextTransport;

/// The fewest keys a multi-get is sent in halves for: below it, making the second half
/// takes less than the extra write costs.
pub(crate) const HALVES_FROM: usize = 64;

/// A part of a multi-get on the wire: its keys' range and its tagged `mg`'s token, before
/// its `gets` (the first of a round's two parts) or after it (the round's last part).
#[derive(Clone, Copy, Default)]
struct Part {
    start: usize,
    end: usize,
    marker: Option<(Marker, u32)>,
}

/// Where a part's tagged `mg` stands (on a meta connection).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// Before its `gets`, of its first key ([`encode_opened_multi_get`]).
    Opens,
    /// After its `gets`, of its last key ([`encode_multi_get`]).
    Closes,
}

impl TextTransport {
    /// [`Transport::get_many_made`]: in halves on a cluster of one server when there are
    /// [`HALVES_FROM`] keys or more and some are still to be made; else every key made,
    /// then one multi-get of them (on one server, read from the made keys themselves, with
    /// `sent` told between writing it and reading the replies).
    pub(crate) fn get_many_in_parts(
        &self,
        keys: &mut dyn MadeKeys,
        found: &mut Found<'_>,
    ) -> Result<()> {
        // Keys made before the call (the cache makes and checks every key first when its key
        // function's keys can be refused one by one) leave nothing to overlap the first
        // half's round trip with, and the second write costs more than decoding the first
        // half's values early gains.
        let all_made = keys.key(keys.count().saturating_sub(1)).is_some();
        if self.servers.len() != 1 {
            return get_many_made_with(keys, found, |keys, sent| self.get_many_then(keys, sent));
        }
        if all_made || keys.count() < HALVES_FROM {
            for i in 0..keys.count() {
                keys.make(i)?;
            }
            let keys: &dyn MadeKeys = keys;
            if !self.one_request(keys) {
                return get_many_of_made(keys, found, |keys, sent| self.get_many_then(keys, sent));
            }
            // Sent whole, read from the made keys themselves: no list of them is made
            // before the request is out.
            let items = self.get_many_on_one_server(keys, &|| keys.sent())?;
            for (i, item) in items.into_iter().enumerate() {
                if let (Some(item), Some(key)) = (item, keys.key(i)) {
                    found(i, key, item);
                }
            }
            return Ok(());
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
                let part_keys = (start..end).map(|i| made_keys.key(i).unwrap_or_default());
                // A first part that a second follows in this round opens with its tag; the
                // second (or a round's only part) closes with it.
                let marker = if sent == 0 && end < n && !full && stopped.is_none() {
                    encode_opened_multi_get(&mut conn, part_keys)
                        .map(|(opaque, _)| (Marker::Opens, opaque))
                } else {
                    encode_multi_get(&mut conn, part_keys)
                        .map(|(opaque, _)| (Marker::Closes, opaque))
                };
                if start == 0 {
                    *head = Head::of(&conn.wbuf);
                }
                self.send(server, &mut conn)?;
                if let Some(part) = parts.get_mut(sent) {
                    *part = Part { start, end, marker };
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
                // A tag is checked against the key it was sent with: the part's first
                // (opening) or last (closing).
                let tag = |at: Marker| match part.marker {
                    Some((marker, opaque)) if marker == at => {
                        let m = if at == Marker::Opens {
                            0
                        } else {
                            count.saturating_sub(1)
                        };
                        key_at(m).map(|k| (opaque, k))
                    }
                    _ => None,
                };
                let closer = tag(Marker::Closes);
                if let Some(opener) = tag(Marker::Opens) {
                    shortened |= self.read_marker(server, &mut conn, opener)?;
                }
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

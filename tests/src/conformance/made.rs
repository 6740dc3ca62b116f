//! Multi-gets whose keys are made during the call (`Transport::get_many_made`): the same
//! reads as `get_many`, and a key that cannot be made stops the call cleanly.

use std::cell::RefCell;
use std::rc::Rc;

use newcache_transport::{Error, Item, KeyError, MadeKeys, Result, Transport};

use super::{get, keys, ok, refs, set, show, Fixture};

/// Keys handed out one at a time, from a list; `fail_at` makes the key at that index fail
/// (the maker's own error), `bad_at` makes it a key memcached cannot take (with a space).
struct Listed<'k> {
    keys: &'k [Vec<u8>],
    made: Vec<Vec<u8>>,
    fail_at: Option<usize>,
    bad_at: Option<usize>,
    /// How many keys were made at each call of [`MadeKeys::sent`] (shared, so that the
    /// items' callback can look while the transport holds the maker).
    sent: Rc<RefCell<Vec<usize>>>,
}

impl<'k> Listed<'k> {
    fn new(keys: &'k [Vec<u8>]) -> Self {
        Listed {
            keys,
            made: Vec::new(),
            fail_at: None,
            bad_at: None,
            sent: Rc::default(),
        }
    }
}

/// The error a [`Listed`] maker stops with.
fn maker_error() -> Error {
    Error::InvalidKey {
        key: "refused by the maker".into(),
        reason: KeyError::Empty,
    }
}

impl MadeKeys for Listed<'_> {
    fn count(&self) -> usize {
        self.keys.len()
    }

    fn make(&mut self, i: usize) -> Result<()> {
        assert_eq!(i, self.made.len(), "keys are made in order, each once");
        if self.fail_at == Some(i) {
            return Err(maker_error());
        }
        let key = if self.bad_at == Some(i) {
            b"a key with spaces".to_vec()
        } else {
            self.keys[i].clone()
        };
        self.made.push(key);
        Ok(())
    }

    fn key(&self, i: usize) -> Option<&[u8]> {
        self.made.get(i).map(Vec::as_slice)
    }

    fn sent(&self) {
        self.sent.borrow_mut().push(self.made.len());
    }
}

/// `get_many_made` hands over exactly what `get_many` answers for the same keys (every hit
/// with its index and key, no miss), for batches of every size a transport may split: none,
/// a few, just below and above 64, and more request bytes than one round of 32 KB.
pub fn get_many_made_hands_over_what_get_many_answers(f: &dyn Fixture) {
    let t = f.transport();
    // 200-byte keys: 1000 of them are over 200 KB of request.
    let long = "k".repeat(190);
    for (count, prefix) in [
        (0, "made-a".to_string()),
        (5, "made-b".to_string()),
        (63, "made-c".to_string()),
        (64, "made-d".to_string()),
        (100, "made-e".to_string()),
        (1000, format!("made-{long}")),
    ] {
        let keys = keys(&prefix, count);
        for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 3 != 1) {
            set(t, k, format!("value {i}").as_bytes(), i as u32, 0);
        }
        let expected = ok("get_many", t.get_many(&refs(&keys)));
        let mut listed = Listed::new(&keys);
        let mut got: Vec<Option<Item>> = vec![None; count];
        let outcome = t.get_many_made(&mut listed, &mut |i, key, item| {
            assert!(
                got[i].is_none(),
                "{count} keys: index {i} handed over twice"
            );
            assert_eq!(
                key,
                keys[i].as_slice(),
                "{count} keys: the key of index {i}"
            );
            got[i] = Some(item);
        });
        ok("get_many_made", outcome);
        assert_eq!(listed.made.len(), count, "{count} keys: every key made");
        let sent = listed.sent.borrow();
        assert!(
            sent.len() <= 1 && sent.iter().all(|&made| made == count),
            "{count} keys: `sent` is told once at most, when every key is out: {sent:?}"
        );
        for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
            assert_eq!(
                want.as_ref().map(|w| (&w.value, w.flags)),
                have.as_ref().map(|h| (&h.value, h.flags)),
                "{count} keys: {}",
                show(&keys[i])
            );
            assert_eq!(want.is_some(), i % 3 != 1, "{}", show(&keys[i]));
        }
    }
}

/// A key the maker cannot make, or makes into one memcached cannot take, fails the call with
/// that error: no key from it on reaches a server, what was handed over before it is right,
/// and the transport goes on answering as before.
pub fn get_many_made_stops_at_a_key_that_cannot_be_made(f: &dyn Fixture) {
    let t = f.transport();
    let keys = keys("stop", 100);
    for (i, k) in keys.iter().enumerate() {
        set(t, k, format!("value {i}").as_bytes(), 0, 0);
    }
    for (fail_at, bad_at) in [(Some(70), None), (None, Some(80)), (Some(0), None)] {
        let stop = fail_at.or(bad_at).unwrap_or_default();
        let before = f.server_stat("cmd_get");
        let mut listed = Listed::new(&keys);
        listed.fail_at = fail_at;
        listed.bad_at = bad_at;
        let mut handed = Vec::new();
        let outcome = t.get_many_made(&mut listed, &mut |i, key, item| {
            assert_eq!(key, keys[i].as_slice(), "the key of index {i}");
            assert_eq!(item.value, format!("value {i}").into_bytes(), "index {i}");
            handed.push(i);
        });
        match (outcome, fail_at) {
            (Err(Error::InvalidKey { key, .. }), Some(_)) => {
                assert_eq!(key, "refused by the maker", "the maker's own error");
            }
            (Err(Error::InvalidKey { reason, .. }), None) => {
                assert!(matches!(reason, KeyError::ForbiddenByte { byte: b' ', .. }));
            }
            (other, _) => panic!("stopping at key {stop}: expected the key's error, got {other:?}"),
        }
        assert!(
            handed.iter().all(|&i| i < stop),
            "stopping at key {stop}: handed over {handed:?}"
        );
        // A transport may close each part of a multi-get with a tagged get of its last key
        // (the meta protocol's way to know where the reply ends): one more get per part.
        if let (Some(before), Some(after)) = (before, f.server_stat("cmd_get")) {
            assert!(
                after - before <= (stop + stop.div_ceil(16)) as u64,
                "stopping at key {stop}: {} keys reached the server",
                after - before
            );
        }
        // In sync: the next reads answer their own keys.
        assert_eq!(
            get(t, &keys[99]).map(|i| i.value),
            Some(b"value 99".to_vec())
        );
        let all = ok("get_many", t.get_many(&refs(&keys)));
        assert!(all.iter().enumerate().all(|(i, item)| item
            .as_ref()
            .is_some_and(|item| item.value == format!("value {i}").into_bytes())));
    }
}

/// A transport that writes a multi-get before it reads the replies (on one server, of 5,
/// 30 or 100 keys) tells the keys' maker when the request is out: once, every key made,
/// before the first item is handed over, so the caller's work there overlaps the server's.
///
/// Not a case of the suite: the text transport and libmemcached's run it; a backend that
/// answers in the same step it is asked (the memory one) has no such moment.
pub fn get_many_made_says_when_its_request_is_out(t: &dyn Transport) {
    for count in [5, 30, 100] {
        let keys = keys(&format!("sent-{count}"), count);
        for k in &keys {
            set(t, k, b"v", 0, 0);
        }
        let mut listed = Listed::new(&keys);
        let sent = Rc::clone(&listed.sent);
        let mut sent_before_items = Vec::new();
        let outcome = t.get_many_made(&mut listed, &mut |_, _, _| {
            sent_before_items.push(sent.borrow().len());
        });
        ok("get_many_made", outcome);
        assert_eq!(
            *sent.borrow(),
            [count],
            "{count} keys: told once, every key made"
        );
        assert_eq!(
            sent_before_items.len(),
            count,
            "{count} keys: every key a hit"
        );
        assert!(
            sent_before_items.iter().all(|&told| told == 1),
            "{count} keys: told before the first item: {sent_before_items:?}"
        );
    }
}

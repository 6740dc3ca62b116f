//! A multi-get's wire keys, made by the key function when the transport asks for them
//! ([`MadeKeys`]), into one buffer: two allocations for the lot, not one per key, and those
//! kept for the thread's next multi-get ([`SPARE`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use newcache_keyfn::{check_wire_key, write_keys_one_at_a_time, write_valid_key, InvalidKey};
use newcache_transport::MadeKeys;

use crate::{Error, KeyFunction, Result};

thread_local! {
    /// The last multi-get's key buffers on this thread, for its next one. Made anew, the
    /// buffer was the call's first large allocation, before its first key went out, and with
    /// glibc's allocator it paid there for consolidating what the last call's result freed:
    /// kept, a hashed multi-get went out sooner (measured when the text transport sent it in
    /// two halves, the first as soon as its keys were made: the text `Cache` over the text
    /// transport alone, `get_many_100` of the interleaved bench, eight alternating runs each:
    /// median 0.86x, from 0.83x to 0.91x, against median 0.83x, from 0.82x to 0.89x).
    static SPARE: Cell<Option<(Vec<u8>, Vec<usize>)>> = const { Cell::new(None) };
}

/// The largest key buffer kept for the next multi-get ([`SPARE`]): a thread that once made
/// a huge multi-get does not hold its buffer for good.
const SPARE_LIMIT: usize = 64 * 1024;

/// How many keys are made at once when the key function's keys are all valid or all
/// refused: the four [`HashedKey`]'s `write_keys` hashes side by side, their `&str`s held on
/// the stack. Past that, making more at once would gain nothing there, and a transport
/// that writes each key as it asks for it (`Transport::get_many_made` allows it; the text
/// transport makes every key first) gets its first ones before the rest are made.
///
/// [`HashedKey`]: newcache_keyfn::HashedKey
const MADE_TOGETHER: usize = 4;

/// The wire keys of the caller's `keys`, made as the transport asks for them.
pub(crate) struct WireKeys<'k, K, M: ?Sized> {
    key_function: &'k dyn KeyFunction,
    keys: &'k [K],
    /// Every key made so far, back to back.
    buf: Vec<u8>,
    /// Where each made key ends in `buf`.
    ends: Vec<usize>,
    /// The key the key function could not make valid, with why: the call's error.
    refused: Option<InvalidKey>,
    /// The key function's keys are all valid or all refused
    /// ([`KeyFunction::validity_is_fixed`]): once the first is checked, the others are
    /// not (the transport still checks every key it sends).
    fixed: bool,
    /// The caller's work for when the request is out ([`MadeKeys::sent`]).
    meanwhile: &'k M,
    /// The keys whose server failed while the others answered ([`MadeKeys::unread`]); a
    /// mutex, as an async multi-get's future holds the keys across its awaits (and must be
    /// `Send`), with a flag so that a call with none takes no lock.
    unread: Mutex<Vec<(usize, newcache_transport::Error)>>,
    any_unread: AtomicBool,
}

impl<'k, K: AsRef<str>, M: Fn() + ?Sized> WireKeys<'k, K, M> {
    pub(crate) fn new(key_function: &'k dyn KeyFunction, keys: &'k [K], meanwhile: &'k M) -> Self {
        let (mut buf, mut ends) = SPARE
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_default();
        buf.reserve(keys.len() * 64);
        ends.reserve(keys.len());
        WireKeys {
            key_function,
            keys,
            buf,
            ends,
            refused: None,
            fixed: key_function.validity_is_fixed(),
            meanwhile,
            unread: Mutex::new(Vec::new()),
            any_unread: AtomicBool::new(false),
        }
    }

    /// Makes the `i`th key when it is the next one. Past the first key of a key function
    /// whose keys are all valid or all refused, the next [`MADE_TOGETHER`] keys are made
    /// at once ([`KeyFunction::write_keys`]).
    fn make_next(&mut self, i: usize) -> std::result::Result<(), InvalidKey> {
        if i != self.ends.len() {
            return Ok(());
        }
        if self.fixed && i > 0 {
            self.make_together(i);
            return Ok(());
        }
        let key = self.keys.get(i).map_or("", AsRef::as_ref);
        write_valid_key(self.key_function, key, &mut self.buf)?;
        self.ends.push(self.buf.len());
        Ok(())
    }

    /// Makes up to [`MADE_TOGETHER`] keys from the `i`th, unchecked. Out of line, so that
    /// a key function checked key by key keeps `make_next` small enough to be inlined into
    /// its loops.
    #[inline(never)]
    fn make_together(&mut self, i: usize) {
        let mut together = [""; MADE_TOGETHER];
        let next = self.keys.get(i..).unwrap_or_default().iter();
        let count = together
            .iter_mut()
            .zip(next)
            .map(|(k, key)| *k = key.as_ref())
            .count();
        let together = together.get(..count).unwrap_or_default();
        let (written, made) = (self.buf.len(), self.ends.len());
        self.key_function
            .write_keys(together, &mut self.buf, &mut self.ends);
        // A key function's own `write_keys` that did not push one end per key, in order,
        // within what it wrote, would shift every key after it onto another's bytes: its
        // keys are made again one at a time.
        let pushed = self.ends.get(made..).unwrap_or_default();
        let (mut in_order, mut start) = (pushed.len() == together.len(), written);
        for &end in pushed {
            in_order &= start <= end;
            start = end;
        }
        in_order &= start == self.buf.len();
        if !in_order {
            self.buf.truncate(written);
            self.ends.truncate(made);
            write_keys_one_at_a_time(self.key_function, together, &mut self.buf, &mut self.ends);
        }
    }

    /// Makes (and checks) every wire key not made yet. A key function checked key by key
    /// makes them all, then they are checked: a key read back word by word right after its
    /// bytes were written waited for those writes (`perf` of the identity-keyed `get_many`
    /// of 100, `get_many_loop cache`: the key check was 2.7% of the samples, the facade's
    /// check of each key as it was made and the transport's of the same keys later; 1.6%
    /// checked after all are made; the transport alone, on keys written long before, 0.9%).
    pub(crate) fn make_all(&mut self) -> Result<()> {
        if self.fixed {
            for i in self.ends.len()..self.keys.len() {
                self.make_next(i)?;
            }
            return Ok(());
        }
        let (first, start) = (self.ends.len(), self.buf.len());
        for key in self.keys.get(first..).unwrap_or_default() {
            self.key_function.write_key(key.as_ref(), &mut self.buf);
            self.ends.push(self.buf.len());
        }
        let mut from = start;
        for (at, &end) in self.ends.iter().enumerate().skip(first) {
            let key = self.keys.get(at).map_or("", AsRef::as_ref);
            let wire = self.buf.get(from..end).unwrap_or_default();
            if let Err(refused) = check_wire_key(key, wire) {
                // As if made one at a time: the keys before the refused one stay made.
                self.buf.truncate(from);
                self.ends.truncate(at);
                return Err(refused.into());
            }
            from = end;
        }
        Ok(())
    }

    /// Every wire key, in the order of the caller's keys.
    pub(crate) fn all(&mut self) -> Result<Vec<&[u8]>> {
        self.make_all()?;
        Ok((0..self.keys.len())
            .map(|i| self.key(i).unwrap_or_default())
            .collect())
    }

    /// The error of a multi-get that failed: the key function's refusal when a key was
    /// refused (it stopped the call), else the transport's own.
    pub(crate) fn failure(&mut self, error: newcache_transport::Error) -> Error {
        match self.refused.take() {
            Some(refused) => refused.into(),
            None => error.into(),
        }
    }
}

impl<K, M: ?Sized> WireKeys<'_, K, M> {
    /// The keys the transport said it could not read ([`MadeKeys::unread`]), taken.
    pub(crate) fn take_unread(&self) -> Vec<(usize, newcache_transport::Error)> {
        if !self.any_unread.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut unread = self.unread.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *unread)
    }
}

impl<K: AsRef<str>, M: Fn() + ?Sized> MadeKeys for WireKeys<'_, K, M> {
    fn count(&self) -> usize {
        self.keys.len()
    }

    fn make(&mut self, i: usize) -> newcache_transport::Result<()> {
        self.make_next(i).map_err(|refused| {
            let error = newcache_transport::Error::InvalidKey {
                key: refused.wire.clone(),
                reason: refused.reason,
            };
            self.refused = Some(refused);
            error
        })
    }

    fn key(&self, i: usize) -> Option<&[u8]> {
        let start = match i.checked_sub(1) {
            Some(before) => *self.ends.get(before)?,
            None => 0,
        };
        self.buf.get(start..*self.ends.get(i)?)
    }

    fn sent(&self) {
        (self.meanwhile)();
    }

    fn unread(&self, i: usize, error: newcache_transport::Error) {
        let mut unread = self.unread.lock().unwrap_or_else(|p| p.into_inner());
        unread.push((i, error));
        self.any_unread.store(true, Ordering::Release);
    }
}

impl<K, M: ?Sized> Drop for WireKeys<'_, K, M> {
    fn drop(&mut self) {
        if self.buf.capacity() > SPARE_LIMIT {
            return;
        }
        let (mut buf, mut ends) = (
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.ends),
        );
        buf.clear();
        ends.clear();
        // A thread being torn down has no slot any more: the buffers are freed.
        let _ = SPARE.try_with(|spare| spare.set(Some((buf, ends))));
    }
}

#[cfg(test)]
mod tests {
    use newcache_keyfn::{make_key, HashedKey, PrefixedKey};

    use super::*;

    #[test]
    fn every_made_key_is_the_key_functions_key_in_the_callers_order() {
        let keys: Vec<String> = (0..10).map(|i| format!("key {i}")).collect();
        let hashed = HashedKey::new("prod", 3);
        let prefixed = PrefixedKey::new("site", 1);
        let functions: [&dyn KeyFunction; 2] = [&hashed, &prefixed];
        for kf in functions {
            for count in [0, 1, 2, 4, 5, 9, 10] {
                let keys = keys.get(..count).unwrap();
                let expected: Vec<_> = keys.iter().map(|k| make_key(kf, k)).collect();
                // Asked one at a time, as the text transport asks while it writes.
                let mut made = WireKeys::new(kf, keys, &|| {});
                for (i, expected) in expected.iter().enumerate() {
                    match expected {
                        Ok(wire) => {
                            made.make(i).unwrap();
                            assert_eq!(made.key(i), Some(wire.as_slice()), "key {i} of {count}");
                        }
                        Err(_) => {
                            // A refusal ends the multi-get: nothing after it is asked.
                            assert!(made.make(i).is_err(), "key {i} of {count}");
                            assert!(made
                                .failure(newcache_transport::Error::NoServers)
                                .to_string()
                                .contains("site:1:key"));
                            break;
                        }
                    }
                }
                assert_eq!(made.key(count), None);
                // Asked for all at once.
                let mut made = WireKeys::new(kf, keys, &|| {});
                match expected
                    .iter()
                    .cloned()
                    .collect::<std::result::Result<Vec<_>, _>>()
                {
                    Ok(wire) => assert_eq!(made.all().unwrap(), wire),
                    Err(_) => assert!(made.all().is_err()),
                }
            }
        }
    }

    /// A key function checked key by key makes every key, then checks them (`make_all`):
    /// the refusal is still the first bad key's, naming the caller's key and its wire key,
    /// with the keys before it made and none after.
    #[test]
    fn make_all_refuses_the_first_bad_key_and_keeps_the_ones_before_it() {
        let identity = |k: &str| k.to_string();
        let mut keys: Vec<String> = (0..100).map(|i| format!("fine-{i}")).collect();
        keys[80] = "two words".to_string();
        keys[90] = "tab\there".to_string();
        let mut made = WireKeys::new(&identity, &keys, &|| {});
        let err = made.make_all().unwrap_err();
        match &err {
            Error::InvalidKey(refused) => {
                assert_eq!(refused.key, "two words");
                assert_eq!(refused.wire, "two words");
                assert_eq!(
                    refused.reason,
                    newcache_transport::KeyError::ForbiddenByte {
                        byte: b' ',
                        offset: 3
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(made.key(79), Some(&b"fine-79"[..]));
        assert_eq!(made.key(80), None);
        // All fine: every key made, in order, after keys made one at a time first.
        let keys: Vec<String> = (0..100).map(|i| format!("fine-{i}")).collect();
        let mut made = WireKeys::new(&identity, &keys, &|| {});
        made.make(0).unwrap();
        made.make(1).unwrap();
        made.make_all().unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(made.key(i), Some(k.as_bytes()), "key {i}");
        }
    }

    /// A key function of the caller's own that says its keys are all valid, with a
    /// `write_keys` that gets the ends wrong.
    struct Miscounts(fn(&mut Vec<usize>));

    impl KeyFunction for Miscounts {
        fn write_key(&self, key: &str, out: &mut Vec<u8>) {
            out.extend_from_slice(b"k:");
            out.extend_from_slice(key.as_bytes());
        }
        fn validity_is_fixed(&self) -> bool {
            true
        }
        fn write_keys(&self, keys: &[&str], out: &mut Vec<u8>, ends: &mut Vec<usize>) {
            let mut these = Vec::new();
            for key in keys {
                self.write_key(key, out);
                these.push(out.len());
            }
            (self.0)(&mut these);
            ends.extend(these);
        }
    }

    #[test]
    fn a_write_keys_that_gets_the_ends_wrong_does_not_shift_the_keys() {
        let keys: Vec<String> = (0..10).map(|i| format!("key{i}")).collect();
        let expected: Vec<Vec<u8>> = keys.iter().map(|k| format!("k:{k}").into_bytes()).collect();
        let wrong: [fn(&mut Vec<usize>); 4] = [
            |ends| ends.push(*ends.last().unwrap()), // one end too many
            |ends| {
                ends.pop(); // one too few
            },
            |ends| ends.reverse(),                 // out of order (four keys)
            |ends| *ends.last_mut().unwrap() += 1, // past what it wrote
        ];
        for (n, wrong) in wrong.into_iter().enumerate() {
            let kf = Miscounts(wrong);
            let mut made = WireKeys::new(&kf, &keys, &|| {});
            assert_eq!(made.all().unwrap(), expected, "case {n}");
        }
    }
}

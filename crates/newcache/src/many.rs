//! What a multi-get returns: the values, and the keys whose value could not be read.
//!
//! [`GetMany`] is a map of its own rather than a `HashMap<String, T>`: the keys asked are
//! copied into one string, not one allocation each, and found again through a table of
//! indices hashed with foldhash (hashbrown's default), not SipHash. That was what a
//! multi-get of 100 cost the caller beyond the values themselves; a caller who wants the
//! `HashMap` asks for it ([`GetMany::into_map`]). The keys are copied and indexed while the
//! server answers, so each value found goes straight to its place.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::ops::Index;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::Error;

/// What [`Cache::get_many`](crate::Cache::get_many) found: the values that were there and
/// decoded, by the caller's keys, and the keys whose value was there but could not be
/// decoded, each with its error. One bad value (a pickle of a Python class, bytes of another
/// type) costs that key, not the call.
///
/// It reads like a `HashMap<String, T>` ([`get`](GetMany::get), indexing, [`len`](GetMany::len),
/// [`iter`](GetMany::iter), [`keys`](GetMany::keys), [`remove`](GetMany::remove) to take a
/// value out), iterates in the order the keys were asked, and says what failed:
///
/// ```
/// # #[cfg(feature = "memory")] {
/// use newcache::{Cache, Ttl};
/// let cache = Cache::from_url("newcache:///?transport=memory")?;
/// cache.set("a", "1", Ttl::Seconds(60))?;
/// cache.set("b", "not a number", Ttl::Seconds(60))?;
/// let got = cache.get_many::<_, u32>(&["a", "b", "c"])?;
/// assert_eq!(got["a"], 1);
/// assert_eq!(got.get("c"), None); // a miss
/// assert_eq!(got.len(), 1);
/// assert_eq!(got.failed()[0].0, "b"); // its Error says why
/// assert!(got.into_complete().is_err()); // or: all of it, or the first failure
/// let mut strings = cache.get_many::<_, String>(&["b"])?;
/// assert_eq!(strings.remove("b").as_deref(), Some("not a number")); // taken out
/// # }
/// # Ok::<(), newcache::Error>(())
/// ```
pub struct GetMany<T> {
    found: Found<T>,
    failed: Vec<(String, Error)>,
}

/// The values found and their keys.
///
/// Made from the keys asked before any value comes ([`Found::of_keys`]): every distinct key
/// is copied and indexed then, and a value handed over goes straight into its key's entry
/// (`slots`). A transport that says when its request is out has this made while the
/// server answers ([`Filling::prepare`]), so hashing the keys costs the call nothing.
struct Found<T> {
    /// The keys asked, each once, back to back, in the order they were first asked.
    keys: String,
    /// Each key's value, with where the key ends in `keys` (it starts where the one before
    /// ends); `None` until found, and once removed ([`GetMany::remove`]).
    entries: Vec<(usize, Option<T>)>,
    /// The values present.
    live: usize,
    /// The positions in `entries`, by their keys' hashes.
    index: HashTable<usize>,
    hasher: DefaultHashBuilder,
    /// The entry of each key asked, by its index in the call, once a key was asked twice
    /// (it has one entry: a map keeps its last value); `None` while the `i`th key asked is
    /// the `i`th entry, and once the values are in.
    slots: Option<Vec<usize>>,
    /// How many values each entry was handed, once a key was asked twice (empty before).
    handed: Vec<u32>,
}

impl<T> Found<T> {
    /// An entry for each distinct key of `asked`, none with a value yet.
    fn of_keys<K: AsRef<str>>(asked: &[K]) -> Self {
        let bytes = asked.iter().map(|k| k.as_ref().len()).sum();
        let mut found = Found {
            keys: String::with_capacity(bytes),
            entries: Vec::with_capacity(asked.len()),
            live: 0,
            index: HashTable::with_capacity(asked.len()),
            hasher: DefaultHashBuilder::default(),
            slots: None,
            handed: Vec::new(),
        };
        for (i, key) in asked.iter().enumerate() {
            let at = found.entry_of(key.as_ref());
            if at != i || found.slots.is_some() {
                let slots = found.slots.get_or_insert_with(|| (0..i).collect());
                slots.push(at);
            }
        }
        found
    }

    /// The `at`th entry's key.
    fn key<'a>(keys: &'a str, entries: &[(usize, Option<T>)], at: usize) -> &'a str {
        let start = match at.checked_sub(1) {
            Some(before) => entries.get(before).map_or(0, |(end, _)| *end),
            None => 0,
        };
        let end = entries.get(at).map_or(start, |(end, _)| *end);
        keys.get(start..end).unwrap_or_default()
    }

    fn position(&self, key: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&at| Self::key(&self.keys, &self.entries, at) == key)
            .copied()
    }

    /// The keys, owned, and their values, in the order asked.
    fn into_owned(self) -> GetManyIntoIter<T> {
        GetManyIntoIter {
            keys: self.keys,
            start: 0,
            entries: self.entries.into_iter(),
            left: self.live,
        }
    }

    fn into_map(self) -> HashMap<String, T> {
        self.into_owned().collect()
    }

    /// Takes out the value of a key asked more than once whose every read did not give
    /// one: one read of a stale key won its refresh (a miss, this caller loads) while
    /// another was served the old value, and the map held that value as a hit, so nobody
    /// refreshed the key (an outside audit).
    fn drop_partly_found(&mut self) {
        let Some(slots) = &self.slots else {
            return;
        };
        let mut asked = vec![0u32; self.entries.len()];
        for &at in slots {
            if let Some(n) = asked.get_mut(at) {
                *n += 1;
            }
        }
        for ((entry, asked), handed) in self
            .entries
            .iter_mut()
            .zip(asked)
            .zip(self.handed.iter().copied().chain(std::iter::repeat(0)))
        {
            if asked > 1 && handed < asked && entry.1.take().is_some() {
                self.live = self.live.saturating_sub(1);
            }
        }
    }

    /// `key`'s entry, found or added (without a value).
    fn entry_of(&mut self, key: &str) -> usize {
        let hash = self.hasher.hash_one(key);
        let Found {
            keys,
            entries,
            index,
            hasher,
            ..
        } = self;
        // One probe: the key's slot, found or made.
        let slot = index.entry(
            hash,
            |&at| Self::key(keys, entries, at) == key,
            |&at| hasher.hash_one(Self::key(keys, entries, at)),
        );
        match slot {
            Entry::Occupied(found) => *found.get(),
            Entry::Vacant(vacant) => {
                let at = entries.len();
                vacant.insert(at);
                keys.push_str(key);
                entries.push((keys.len(), None));
                at
            }
        }
    }

    /// The value of the `i`th key asked; a key given twice keeps its last value, as a map's
    /// insert.
    fn put(&mut self, i: usize, value: T) {
        let Found {
            entries,
            live,
            slots,
            handed,
            ..
        } = self;
        let at = match slots {
            Some(slots) => {
                let at = slots.get(i).copied();
                if handed.is_empty() {
                    handed.resize(entries.len(), 0);
                }
                if let Some(n) = at.and_then(|at| handed.get_mut(at)) {
                    *n += 1;
                }
                at
            }
            None => Some(i),
        };
        if let Some(entry) = at.and_then(|at| entries.get_mut(at)) {
            if entry.1.replace(value).is_none() {
                *live += 1;
            }
        }
    }
}

impl<T> GetMany<T> {
    /// The value of `key`, when it was found and decoded.
    pub fn get(&self, key: &str) -> Option<&T> {
        let at = self.found.position(key)?;
        self.found.entries.get(at)?.1.as_ref()
    }

    /// The value of `key`, to change in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut T> {
        let at = self.found.position(key)?;
        self.found.entries.get_mut(at)?.1.as_mut()
    }

    /// Takes `key`'s value out, when it was found and decoded (and not taken already).
    pub fn remove(&mut self, key: &str) -> Option<T> {
        let hash = self.found.hasher.hash_one(key);
        let Found {
            keys,
            entries,
            live,
            index,
            ..
        } = &mut self.found;
        let at = index
            .find_entry(hash, |&at| Found::key(keys, entries, at) == key)
            .ok()?
            .remove()
            .0;
        let value = entries.get_mut(at)?.1.take();
        if value.is_some() {
            *live = live.saturating_sub(1);
        }
        value
    }

    /// True when `key`'s value was found and decoded.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// How many values were found and decoded.
    pub fn len(&self) -> usize {
        self.found.live
    }

    /// True when no value was found (or none could be decoded).
    pub fn is_empty(&self) -> bool {
        self.found.live == 0
    }

    /// The keys and their values, in the order the keys were asked.
    pub fn iter(&self) -> GetManyIter<'_, T> {
        GetManyIter {
            keys: &self.found.keys,
            start: 0,
            entries: self.found.entries.iter(),
            left: self.found.live,
        }
    }

    /// The keys found, in the order asked.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.iter().map(|(key, _)| key)
    }

    /// The values found, in the order their keys were asked.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.iter().map(|(_, value)| value)
    }

    /// The keys whose value could not be read, with why, in the order asked: a value that
    /// did not decode ([`Error::Decode`]), or a key whose server failed while the others
    /// answered ([`Error::Transport`], a server failure).
    pub fn failed(&self) -> &[(String, Error)] {
        &self.failed
    }

    /// True when every value that was there was read.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// The values read as a `HashMap`, dropping the failures.
    pub fn into_map(self) -> HashMap<String, T> {
        self.found.into_map()
    }

    /// The values as a `HashMap`, and the failures.
    pub fn into_parts(self) -> (HashMap<String, T>, Vec<(String, Error)>) {
        (self.found.into_map(), self.failed)
    }

    /// The values as a `HashMap` when every one was read, else the first failure's error.
    pub fn into_complete(self) -> Result<HashMap<String, T>, Error> {
        match self.failed.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(self.found.into_map()),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for GetMany<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetMany")
            .field("values", &DebugMap(self))
            .field("failed", &self.failed)
            .finish()
    }
}

/// The values of a [`GetMany`] shown as a map.
struct DebugMap<'a, T>(&'a GetMany<T>);

impl<T: fmt::Debug> fmt::Debug for DebugMap<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

/// `got["key"]`: the key's value.
///
/// # Panics
///
/// When the key has no value, as a `HashMap`'s indexing does; [`GetMany::get`] returns an
/// `Option` instead.
impl<T, Q: AsRef<str> + ?Sized> Index<&Q> for GetMany<T> {
    type Output = T;

    // Indexing's contract (a `HashMap`'s, a slice's) is to panic on what is not there: the
    // caller who indexes asserts the key was found; `get` is the form that does not.
    #[allow(clippy::panic)]
    fn index(&self, key: &Q) -> &T {
        match self.get(key.as_ref()) {
            Some(value) => value,
            None => panic!("GetMany has no value for the key {:?}", key.as_ref()),
        }
    }
}

/// The keys and values of a [`GetMany`], in the order asked ([`GetMany::iter`]).
pub struct GetManyIter<'a, T> {
    keys: &'a str,
    start: usize,
    entries: std::slice::Iter<'a, (usize, Option<T>)>,
    left: usize,
}

impl<'a, T> Iterator for GetManyIter<'a, T> {
    type Item = (&'a str, &'a T);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (end, value) = self.entries.next()?;
            let key = self.keys.get(self.start..*end).unwrap_or_default();
            self.start = *end;
            if let Some(value) = value {
                self.left = self.left.saturating_sub(1);
                return Some((key, value));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> ExactSizeIterator for GetManyIter<'_, T> {}

/// The owned keys and values of a [`GetMany`], in the order asked.
pub struct GetManyIntoIter<T> {
    keys: String,
    start: usize,
    entries: std::vec::IntoIter<(usize, Option<T>)>,
    left: usize,
}

impl<T> Iterator for GetManyIntoIter<T> {
    type Item = (String, T);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (end, value) = self.entries.next()?;
            let start = std::mem::replace(&mut self.start, end);
            if let Some(value) = value {
                self.left = self.left.saturating_sub(1);
                let key = self.keys.get(start..end).unwrap_or_default().to_owned();
                return Some((key, value));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> ExactSizeIterator for GetManyIntoIter<T> {}

impl<T> IntoIterator for GetMany<T> {
    type Item = (String, T);
    type IntoIter = GetManyIntoIter<T>;

    fn into_iter(self) -> GetManyIntoIter<T> {
        self.found.into_owned()
    }
}

impl<'a, T> IntoIterator for &'a GetMany<T> {
    type Item = (&'a str, &'a T);
    type IntoIter = GetManyIter<'a, T>;

    fn into_iter(self) -> GetManyIter<'a, T> {
        self.iter()
    }
}

/// A [`GetMany`] as its values are handed over. Its buffers and its index of the keys need
/// no reply: a transport that says when its request is out ([`MadeKeys::sent`]) gets them
/// made then, while the server answers ([`Filling::prepare`]); else they are made with the
/// first value.
///
/// [`MadeKeys::sent`]: newcache_transport::MadeKeys::sent
pub(crate) struct Filling<'k, K, T> {
    keys: &'k [K],
    /// What [`Filling::prepare`] made, until the first value takes it.
    early: Mutex<Option<Found<T>>>,
    /// Set once `early` holds it, so that a value handed over before it does not lock.
    ready: AtomicBool,
}

impl<'k, K: AsRef<str>, T> Filling<'k, K, T> {
    pub(crate) fn new(keys: &'k [K]) -> Self {
        Filling {
            keys,
            early: Mutex::new(None),
            ready: AtomicBool::new(false),
        }
    }

    /// Every key copied and indexed, with room for its value.
    fn room(&self) -> Found<T> {
        Found::of_keys(self.keys)
    }

    /// Makes the buffers and the index, once.
    pub(crate) fn prepare(&self) {
        if self.ready.load(Ordering::Acquire) {
            return;
        }
        let room = self.room();
        if let Ok(mut early) = self.early.lock() {
            *early = Some(room);
            self.ready.store(true, Ordering::Release);
        }
    }

    /// What takes the values.
    pub(crate) fn taker(&self) -> Taker<'_, 'k, K, T> {
        Taker {
            filling: self,
            found: None,
        }
    }
}

/// Puts each value in under its key ([`Filling::taker`]).
pub(crate) struct Taker<'f, 'k, K, T> {
    filling: &'f Filling<'k, K, T>,
    found: Option<Found<T>>,
}

impl<K: AsRef<str>, T> Taker<'_, '_, K, T> {
    /// The `i`th key's value.
    #[inline]
    pub(crate) fn insert(&mut self, i: usize, value: T) {
        let filling = self.filling;
        let found = self.found.get_or_insert_with(|| {
            let early = if filling.ready.load(Ordering::Acquire) {
                filling.early.lock().ok().and_then(|mut e| e.take())
            } else {
                None
            };
            early.unwrap_or_else(|| filling.room())
        });
        found.put(i, value);
    }

    /// The multi-get's answer: the values, and the keys that failed.
    pub(crate) fn finish(self, failed: Vec<(String, Error)>) -> GetMany<T> {
        let mut found = self.found.unwrap_or_else(|| Found::of_keys::<&str>(&[]));
        found.drop_partly_found();
        found.slots = None;
        found.handed = Vec::new();
        GetMany { found, failed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn many(pairs: &[(&str, u32)]) -> GetMany<u32> {
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        let filling = Filling::new(&keys);
        filling.prepare();
        let mut taker = filling.taker();
        for (i, (_, v)) in pairs.iter().enumerate() {
            taker.insert(i, *v);
        }
        taker.finish(Vec::new())
    }

    #[test]
    fn finds_every_key_and_no_other() {
        let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
        let pairs: Vec<(&str, u32)> = keys.iter().zip(0..).map(|(k, i)| (k.as_str(), i)).collect();
        let got = many(&pairs);
        assert_eq!(got.len(), 300);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(got.get(key), Some(&u32::try_from(i).unwrap()), "{key}");
            assert_eq!(got[key], u32::try_from(i).unwrap());
        }
        assert_eq!(got.get("key-300"), None);
        assert_eq!(got.get("key-1 "), None);
        assert_eq!(got.get(""), None);
        assert!(!got.contains_key("key"));
    }

    #[test]
    fn iterates_in_the_order_asked_with_each_key_once() {
        let got = many(&[("b", 1), ("", 2), ("a", 3), ("b", 4), ("héllo", 5)]);
        let seen: Vec<(&str, u32)> = got.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(seen, [("b", 4), ("", 2), ("a", 3), ("héllo", 5)]);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["b", "", "a", "héllo"]);
        assert_eq!(got.values().copied().collect::<Vec<_>>(), [4, 2, 3, 5]);
        let owned: Vec<(String, u32)> = got.into_iter().collect();
        assert_eq!(owned[3], ("héllo".to_string(), 5));
    }

    #[test]
    fn a_value_changed_in_place_and_the_map_it_becomes() {
        let mut got = many(&[("a", 1), ("b", 2)]);
        if let Some(v) = got.get_mut("a") {
            *v = 10;
        }
        assert_eq!(
            format!("{got:?}"),
            r#"GetMany { values: {"a": 10, "b": 2}, failed: [] }"#
        );
        let map = got.into_complete().unwrap();
        assert_eq!(
            map,
            HashMap::from([("a".to_string(), 10), ("b".to_string(), 2)])
        );
    }

    #[test]
    fn values_handed_over_before_the_buffers_are_made_are_kept() {
        let keys = ["x", "y"];
        let filling = Filling::new(&keys);
        let mut taker = filling.taker();
        taker.insert(1, 7u8);
        filling.prepare();
        taker.insert(0, 8);
        let got = taker.finish(Vec::new());
        assert_eq!((got.get("x"), got.get("y")), (Some(&8), Some(&7)));
        assert!(many(&[]).is_empty());
    }

    #[test]
    fn a_key_asked_twice_has_one_entry_with_its_last_value() {
        // After a key asked twice, the keys asked are no longer their entries' positions.
        let got = many(&[("a", 1), ("b", 2), ("a", 3), ("c", 4)]);
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            [("a", &3), ("b", &2), ("c", &4)]
        );
        let keys = ["a", "b", "a", "miss"];
        let filling = Filling::new(&keys);
        filling.prepare();
        let mut taker = filling.taker();
        taker.insert(0, 1u8);
        taker.insert(1, 2);
        taker.insert(2, 3);
        let got = taker.finish(Vec::new());
        assert_eq!(got.len(), 2);
        assert_eq!((got.get("a"), got.get("b")), (Some(&3), Some(&2)));
        assert_eq!((got.get("miss"), got.contains_key("miss")), (None, false));
        assert_eq!(got.iter().collect::<Vec<_>>(), [("a", &3), ("b", &2)]);
        let owned: Vec<(String, u8)> = got.into_iter().collect();
        assert_eq!(owned, [("a".to_string(), 3), ("b".to_string(), 2)]);
    }

    #[test]
    fn a_key_asked_twice_and_read_once_has_no_value() {
        // The first "a" read as a miss (its refresh won), the second as a value: the key is
        // missing, as it is for a caller who asked it once.
        let keys = ["a", "b", "a", "b"];
        let filling = Filling::new(&keys);
        filling.prepare();
        let mut taker = filling.taker();
        taker.insert(1, 2u8);
        taker.insert(2, 3);
        taker.insert(3, 4);
        let got = taker.finish(Vec::new());
        assert_eq!(got.iter().collect::<Vec<_>>(), [("b", &4)]);
        assert_eq!((got.len(), got.get("a")), (1, None));
    }

    #[test]
    fn a_value_removed_is_taken_out_and_gone() {
        let mut got = many(&[("a", 1), ("b", 2), ("c", 3)]);
        assert_eq!(got.remove("b"), Some(2));
        assert_eq!(got.remove("b"), None);
        assert_eq!(got.remove("zz"), None);
        assert_eq!(
            (got.len(), got.get("b"), got.contains_key("b")),
            (2, None, false)
        );
        assert_eq!(got.iter().len(), 2);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(got.get("c"), Some(&3));
        assert_eq!(got.remove("a"), Some(1));
        let owned: Vec<(String, u32)> = got.into_iter().collect();
        assert_eq!(owned, [("c".to_string(), 3)]);
    }

    #[test]
    #[should_panic(expected = "no value for the key \"zz\"")]
    fn indexing_a_missing_key_panics_as_a_map_does() {
        let _ = many(&[("a", 1)])["zz"];
    }
}

//! What a multi-get returns: the values, and the keys whose value could not be read.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::Error;

/// What [`Cache::get_many`](crate::Cache::get_many) found: the values that were there and
/// decoded, keyed by the caller's keys, and the keys whose value was there but could not be
/// decoded, each with its error. One bad value (a pickle of a Python class, bytes of another
/// type) costs that key, not the call.
///
/// It reads as the map (`Deref`), iterates as it, and says what failed:
///
/// ```
/// # #[cfg(feature = "memory")] {
/// use newcache::{Cache, Ttl};
/// let cache = Cache::from_url("newcache:///?transport=memory")?;
/// cache.set("a", "1", Ttl::Seconds(60))?;
/// cache.set("b", "not a number", Ttl::Seconds(60))?;
/// let got = cache.get_many::<_, u32>(&["a", "b", "c"])?;
/// assert_eq!(got["a"], 1);
/// assert_eq!(got.len(), 1);
/// assert_eq!(got.failed()[0].0, "b"); // its Error says why
/// assert!(got.into_complete().is_err()); // or: all of it, or the first failure
/// # }
/// # Ok::<(), newcache::Error>(())
/// ```
#[derive(Debug)]
pub struct GetMany<T> {
    values: HashMap<String, T>,
    failed: Vec<(String, Error)>,
}

impl<T> GetMany<T> {
    pub(crate) fn new(values: HashMap<String, T>, failed: Vec<(String, Error)>) -> Self {
        GetMany { values, failed }
    }

    /// The keys whose value could not be read, with why, in the order asked.
    pub fn failed(&self) -> &[(String, Error)] {
        &self.failed
    }

    /// True when every value that was there was read.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// The values read, dropping the failures.
    pub fn into_map(self) -> HashMap<String, T> {
        self.values
    }

    /// The values and the failures.
    pub fn into_parts(self) -> (HashMap<String, T>, Vec<(String, Error)>) {
        (self.values, self.failed)
    }

    /// The values when every one was read, else the first failure's error.
    pub fn into_complete(self) -> Result<HashMap<String, T>, Error> {
        match self.failed.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(self.values),
        }
    }
}

impl<T> Deref for GetMany<T> {
    type Target = HashMap<String, T>;

    fn deref(&self) -> &HashMap<String, T> {
        &self.values
    }
}

impl<T> IntoIterator for GetMany<T> {
    type Item = (String, T);
    type IntoIter = std::collections::hash_map::IntoIter<String, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.values.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a GetMany<T> {
    type Item = (&'a String, &'a T);
    type IntoIter = std::collections::hash_map::Iter<'a, String, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.values.iter()
    }
}

/// The map of a multi-get as its values are handed over, keyed by owned copies of the
/// caller's keys. The copies and the map's table are allocations that need no reply: a
/// transport that says when its request is out ([`MadeKeys::sent`]) gets them made then,
/// while the server answers ([`Filling::prepare`]); else each key is copied as its value
/// comes. The price: a key that misses had its copy made too, and it is freed at the end.
///
/// [`MadeKeys::sent`]: newcache_transport::MadeKeys::sent
pub(crate) struct Filling<'k, K, T> {
    keys: &'k [K],
    /// What [`Filling::prepare`] made, until the first value takes it.
    early: Mutex<Option<Prepared<T>>>,
    /// Set once `early` holds it, so that a value handed over before it does not lock.
    ready: AtomicBool,
}

/// The owned keys (by index) and the map's table, made ahead.
struct Prepared<T> {
    keys: Vec<Option<String>>,
    values: HashMap<String, T>,
}

impl<'k, K: AsRef<str>, T> Filling<'k, K, T> {
    pub(crate) fn new(keys: &'k [K]) -> Self {
        Filling {
            keys,
            early: Mutex::new(None),
            ready: AtomicBool::new(false),
        }
    }

    /// Makes the owned keys and the map's table, once.
    pub(crate) fn prepare(&self) {
        if self.ready.load(Ordering::Acquire) {
            return;
        }
        let prepared = Prepared {
            keys: self
                .keys
                .iter()
                .map(|k| Some(k.as_ref().to_owned()))
                .collect(),
            values: HashMap::with_capacity(self.keys.len()),
        };
        if let Ok(mut early) = self.early.lock() {
            *early = Some(prepared);
            self.ready.store(true, Ordering::Release);
        }
    }

    /// What takes the values: the map, filled from the prepared keys when there are some.
    pub(crate) fn taker(&self) -> Taker<'_, 'k, K, T> {
        Taker {
            filling: self,
            keys: Vec::new(),
            values: HashMap::new(),
            taken: false,
        }
    }
}

/// Puts each value in the map under its key ([`Filling::taker`]).
pub(crate) struct Taker<'f, 'k, K, T> {
    filling: &'f Filling<'k, K, T>,
    keys: Vec<Option<String>>,
    values: HashMap<String, T>,
    taken: bool,
}

impl<K: AsRef<str>, T> Taker<'_, '_, K, T> {
    /// The `i`th key's value.
    pub(crate) fn insert(&mut self, i: usize, value: T) {
        if !self.taken && self.filling.ready.load(Ordering::Acquire) {
            self.taken = true;
            let prepared = self.filling.early.lock().ok().and_then(|mut e| e.take());
            if let Some(prepared) = prepared {
                self.keys = prepared.keys;
                if self.values.is_empty() {
                    self.values = prepared.values;
                }
            }
        }
        if self.values.capacity() == 0 {
            self.values.reserve(self.filling.keys.len());
        }
        let key = match self.keys.get_mut(i).and_then(Option::take) {
            Some(key) => key,
            None => self
                .filling
                .keys
                .get(i)
                .map_or("", AsRef::as_ref)
                .to_owned(),
        };
        self.values.insert(key, value);
    }

    /// The map.
    pub(crate) fn into_map(self) -> HashMap<String, T> {
        self.values
    }
}

//! What a multi-get returns: the values, and the keys whose value could not be read.

use std::collections::HashMap;
use std::ops::Deref;

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

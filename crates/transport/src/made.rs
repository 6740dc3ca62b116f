//! Multi-gets whose wire keys are made while the request goes out
//! ([`Transport::get_many_made`](crate::Transport::get_many_made)).
//!
//! A caller that derives its wire keys (the cache's key function: a SHA-1 of every key)
//! spends a few microseconds per hundred keys before a plain multi-get can send anything.
//! Handed the making instead, a transport can send the first keys at once and make the rest
//! while the server answers them, and hand each reply over as it is read, so the caller's
//! work on the first values overlaps the server's on the last. It also tells the caller when
//! the request is out ([`MadeKeys::sent`]), so the caller's work that needs no reply (the
//! cache owns the keys of the map it returns then) overlaps the server's too.

use crate::{Error, Item, KeyError, Result, Transport};

/// The wire keys of one multi-get, made by the caller one at a time, when the transport
/// asks for them.
///
/// A transport calls [`make`](MadeKeys::make) for `0, 1, 2, ...` in order, each index once,
/// and may send the keys made so far before it makes the next; [`key`](MadeKeys::key) then
/// gives a made key back (to write it, and to check the replies against it).
///
/// ```
/// use newcache_transport::{MadeKeys, Result};
///
/// /// Wire keys with a prefix, made into one buffer.
/// struct Prefixed<'k> {
///     keys: &'k [&'k str],
///     buf: Vec<u8>,
///     ends: Vec<usize>,
/// }
///
/// impl MadeKeys for Prefixed<'_> {
///     fn count(&self) -> usize {
///         self.keys.len()
///     }
///     fn make(&mut self, i: usize) -> Result<()> {
///         self.buf.extend_from_slice(b"app:");
///         self.buf.extend_from_slice(self.keys.get(i).map_or("", |k| k).as_bytes());
///         self.ends.push(self.buf.len());
///         Ok(())
///     }
///     fn key(&self, i: usize) -> Option<&[u8]> {
///         let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
///         self.buf.get(start..*self.ends.get(i)?)
///     }
/// }
///
/// let mut keys = Prefixed { keys: &["a", "b"], buf: Vec::new(), ends: Vec::new() };
/// let made = newcache_transport::make_all(&mut keys)?;
/// assert_eq!(made, [&b"app:a"[..], b"app:b"]);
/// # Ok::<(), newcache_transport::Error>(())
/// ```
pub trait MadeKeys {
    /// How many keys the multi-get has.
    fn count(&self) -> usize;

    /// Makes the `i`th key. An error stops the multi-get: nothing more is sent, the replies
    /// to the keys already sent are read (and handed over), and the call returns this error.
    fn make(&mut self, i: usize) -> Result<()>;

    /// The `i`th key, once made; `None` before.
    fn key(&self, i: usize) -> Option<&[u8]>;

    /// Told once every key is sent and before the replies are read, by a transport that
    /// waits for them there: what the caller does here (owning the keys its result will
    /// hold, say) runs while the server answers, not after. A transport may not call it (the
    /// default does nothing), so a caller must not depend on it.
    fn sent(&self) {}
}

/// Keys made before the call, handed to the transport as it asks for them: a
/// [`Transport::get_many_made`] of wire keys the caller already has.
///
/// ```
/// use newcache_transport::{MadeKeys, Premade};
///
/// let keys = [b"a".to_vec(), b"b".to_vec()];
/// let mut premade = Premade::new(&keys);
/// assert_eq!(premade.key(0), None, "not made yet");
/// premade.make(0)?;
/// assert_eq!(premade.key(0), Some(&b"a"[..]));
/// # Ok::<(), newcache_transport::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Premade<'k, K> {
    keys: &'k [K],
    made: usize,
}

impl<'k, K: AsRef<[u8]>> Premade<'k, K> {
    /// The keys, none handed over yet.
    pub fn new(keys: &'k [K]) -> Self {
        Premade { keys, made: 0 }
    }

    /// The keys, every one handed over already: a plain list of wire keys read as
    /// [`MadeKeys`].
    ///
    /// ```
    /// use newcache_transport::{MadeKeys, Premade};
    ///
    /// let keys = [&b"a"[..], b"b"];
    /// assert_eq!(Premade::made(&keys).key(1), Some(&b"b"[..]));
    /// ```
    pub fn made(keys: &'k [K]) -> Self {
        Premade {
            keys,
            made: keys.len(),
        }
    }
}

impl<K: AsRef<[u8]>> MadeKeys for Premade<'_, K> {
    fn count(&self) -> usize {
        self.keys.len()
    }

    fn make(&mut self, i: usize) -> Result<()> {
        self.made = self.made.max(i.saturating_add(1));
        Ok(())
    }

    fn key(&self, i: usize) -> Option<&[u8]> {
        self.keys
            .get(i)
            .filter(|_| i < self.made)
            .map(AsRef::as_ref)
    }
}

/// What a multi-get hands over: `(i, key, item)` for the `i`th key's item, for each key that
/// holds one, in no promised order. They are the call's answer once it returns `Ok`; after
/// an error, drop them ([`Transport::get_many_made`]).
pub type Found<'f> = dyn FnMut(usize, &[u8], Item) + 'f;

/// Makes every key of `keys`, in order, and returns them: the request of a multi-get that
/// is sent at once.
///
/// A key the maker did not give back after making it is an empty key, which every transport
/// refuses ([`KeyError::Empty`]).
pub fn make_all(keys: &mut dyn MadeKeys) -> Result<Vec<&[u8]>> {
    make_each(keys).map(every_key)
}

/// Makes every key of `keys`, in order; then they are only read.
fn make_each(keys: &mut dyn MadeKeys) -> Result<&dyn MadeKeys> {
    for i in 0..keys.count() {
        keys.make(i)?;
    }
    Ok(keys)
}

/// Every made key, in order (an empty key for one the maker did not give back).
fn every_key(keys: &dyn MadeKeys) -> Vec<&[u8]> {
    (0..keys.count())
        .map(|i| keys.key(i).unwrap_or_default())
        .collect()
}

/// [`Transport::get_many_made`] sent at once: every key made ([`make_all`]), one
/// [`Transport::get_many`] of them, and each item handed to `found`. The trait's default,
/// and what a backend that splits large multi-gets does with small ones.
pub fn get_many_made_at_once(
    transport: &(impl Transport + ?Sized),
    keys: &mut dyn MadeKeys,
    found: &mut Found<'_>,
) -> Result<()> {
    get_many_made_with(keys, found, |keys, _| transport.get_many(keys))
}

/// [`Transport::get_many_made`] as one multi-get of every key: each key made, then
/// `get_many` of them all, given the keys' [`MadeKeys::sent`] to call once its request is
/// out (a multi-get that writes before it reads), then each item handed to `found`.
pub fn get_many_made_with(
    keys: &mut dyn MadeKeys,
    found: &mut Found<'_>,
    get_many: impl FnOnce(&[&[u8]], &dyn Fn()) -> Result<Vec<Option<Item>>>,
) -> Result<()> {
    get_many_of_made(make_each(keys)?, found, get_many)
}

/// [`get_many_made_with`] of keys made already (every index given to
/// [`MadeKeys::make`]): `get_many` of them all, then each item handed to `found`.
pub fn get_many_of_made(
    keys: &dyn MadeKeys,
    found: &mut Found<'_>,
    get_many: impl FnOnce(&[&[u8]], &dyn Fn()) -> Result<Vec<Option<Item>>>,
) -> Result<()> {
    let made = every_key(keys);
    let items = get_many(&made, &|| keys.sent())?;
    for (i, (item, key)) in items.into_iter().zip(&made).enumerate() {
        if let Some(item) = item {
            found(i, key, item);
        }
    }
    Ok(())
}

/// The `i`th made key, or the error a transport returns for a key its maker did not give
/// back (an empty key).
pub fn made_key(keys: &dyn MadeKeys, i: usize) -> Result<&[u8]> {
    keys.key(i).ok_or(Error::InvalidKey {
        key: String::new(),
        reason: KeyError::Empty,
    })
}

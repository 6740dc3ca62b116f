//! Multi-gets whose wire keys are made while the request goes out
//! ([`Transport::get_many_made`]).
//!
//! A caller that derives its wire keys (the cache's key function: a SHA-1 of every key)
//! spends a few microseconds per hundred keys before a plain multi-get can send anything.
//! Handed the making instead, a transport can send the first keys at once and make the rest
//! while the server answers them, and hand each reply over as it is read, so the caller's
//! work on the first values overlaps the server's on the last. It also tells the caller when
//! the request is out ([`MadeKeys::sent`]), so the caller's work that needs no reply (the
//! cache owns the keys of the map it returns then) overlaps the server's too.

use crate::{Error, Item, KeyError, ManyRead, Result, Transport};

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

    /// Told, for each key whose server failed while the others answered, that failure: its
    /// value is not among those handed over, yet it is no miss. A transport that fails the
    /// whole call instead does not call it (the default does nothing).
    fn unread(&self, i: usize, error: Error) {
        let _ = (i, error);
    }
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

/// The most keys whose list [`get_many_of_made`] keeps on the stack (2 KB of it).
pub const KEYS_ON_STACK: usize = 128;

/// Every made key, in order.
fn every_key(keys: &dyn MadeKeys) -> Vec<&[u8]> {
    (0..keys.count()).map(|i| made_or_empty(keys, i)).collect()
}

/// The `i`th made key, or an empty key (which every transport refuses) when the maker did
/// not give it back.
#[inline]
fn made_or_empty(keys: &dyn MadeKeys, i: usize) -> &[u8] {
    keys.key(i).unwrap_or_default()
}

/// [`Transport::get_many_made`] sent at once: every key made ([`make_all`]), one
/// [`Transport::get_many`] of them, and each item handed to `found`. The trait's default,
/// and what a backend that splits large multi-gets does with small ones.
pub fn get_many_made_at_once(
    transport: &(impl Transport + ?Sized),
    keys: &mut dyn MadeKeys,
    found: &mut Found<'_>,
) -> Result<()> {
    get_many_made_with(keys, found, |keys, _| transport.get_many_read(keys))
}

/// [`Transport::get_many_made`] as one multi-get of every key: each key made, then
/// `get_many` of them all, given the keys' [`MadeKeys::sent`] to call once its request is
/// out (a multi-get that writes before it reads), then each item handed to `found`, and
/// each key its server failed to answer told to [`MadeKeys::unread`].
pub fn get_many_made_with(
    keys: &mut dyn MadeKeys,
    found: &mut Found<'_>,
    get_many: impl FnOnce(&[&[u8]], &dyn Fn()) -> Result<ManyRead>,
) -> Result<()> {
    get_many_of_made(make_each(keys)?, found, get_many)
}

/// [`get_many_made_with`] of keys made already (every index given to
/// [`MadeKeys::make`]): `get_many` of them all, then each item handed to `found`.
///
/// The list of the made keys is on the stack for up to [`KEYS_ON_STACK`] keys: a list on
/// the heap (1.6 KB for 100 keys) was the call's first large allocation, made before the
/// request went out, and glibc's allocator merges there the small blocks the caller freed
/// since (the last multi-get's values): about 7,000 instructions of a `get_many` of 100
/// (callgrind, `malloc_consolidate`) before anything was sent, where the result's list,
/// allocated once the request is out, pays for it while the server answers.
pub fn get_many_of_made(
    keys: &dyn MadeKeys,
    found: &mut Found<'_>,
    get_many: impl FnOnce(&[&[u8]], &dyn Fn()) -> Result<ManyRead>,
) -> Result<()> {
    let count = keys.count();
    let mut on_stack: [&[u8]; KEYS_ON_STACK] = [&[]; KEYS_ON_STACK];
    let on_heap: Vec<&[u8]>;
    let made: &[&[u8]] = if count <= KEYS_ON_STACK {
        for (i, slot) in on_stack.iter_mut().enumerate().take(count) {
            *slot = made_or_empty(keys, i);
        }
        on_stack.get(..count).unwrap_or_default()
    } else {
        on_heap = every_key(keys);
        &on_heap
    };
    let read = get_many(made, &|| keys.sent())?;
    for (i, (item, key)) in read.items.into_iter().zip(made).enumerate() {
        if let Some(item) = item {
            found(i, key, item);
        }
    }
    for (i, error) in read.unread {
        keys.unread(i, error);
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Made keys that count the times `sent` is told.
    struct Counted<'k> {
        keys: Premade<'k, Vec<u8>>,
        sent: Cell<u32>,
    }

    impl MadeKeys for Counted<'_> {
        fn count(&self) -> usize {
            self.keys.count()
        }
        fn make(&mut self, i: usize) -> Result<()> {
            self.keys.make(i)
        }
        fn key(&self, i: usize) -> Option<&[u8]> {
            self.keys.key(i)
        }
        fn sent(&self) {
            self.sent.set(self.sent.get() + 1);
        }
    }

    #[test]
    fn the_made_keys_are_asked_for_in_order_on_the_stack_or_past_it() {
        for count in [
            0,
            1,
            KEYS_ON_STACK - 1,
            KEYS_ON_STACK,
            KEYS_ON_STACK + 1,
            300,
        ] {
            let keys: Vec<Vec<u8>> = (0..count).map(|i| format!("k{i}").into_bytes()).collect();
            let mut made = Counted {
                keys: Premade::new(&keys),
                sent: Cell::new(0),
            };
            let mut handed = Vec::new();
            get_many_made_with(
                &mut made,
                &mut |i, key, item| handed.push((i, key.to_vec(), item.value)),
                |asked, sent| {
                    assert_eq!(asked, keys.as_slice(), "{count} keys");
                    sent();
                    // Every other key is a hit, holding its own key.
                    Ok(ManyRead::all(
                        asked
                            .iter()
                            .enumerate()
                            .map(|(i, k)| {
                                (i % 2 == 0).then(|| Item {
                                    value: k.to_vec(),
                                    flags: 0,
                                    cas: None,
                                })
                            })
                            .collect(),
                    ))
                },
            )
            .unwrap();
            assert_eq!(made.sent.get(), 1, "{count} keys");
            let expected: Vec<_> = (0..count)
                .step_by(2)
                .map(|i| (i, keys[i].clone(), keys[i].clone()))
                .collect();
            assert_eq!(handed, expected, "{count} keys");
        }
    }
}

//! A multi-get's wire keys, made by the key function when the transport asks for them
//! ([`MadeKeys`]), into one buffer: two allocations for the lot, not one per key.

use newcache_keyfn::{write_valid_key, InvalidKey};
use newcache_transport::MadeKeys;

use crate::{Error, KeyFunction, Result};

/// The wire keys of the caller's `keys`, made one at a time.
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
}

impl<'k, K: AsRef<str>, M: Fn() + ?Sized> WireKeys<'k, K, M> {
    pub(crate) fn new(key_function: &'k dyn KeyFunction, keys: &'k [K], meanwhile: &'k M) -> Self {
        WireKeys {
            key_function,
            keys,
            buf: Vec::with_capacity(keys.len() * 64),
            ends: Vec::with_capacity(keys.len()),
            refused: None,
            fixed: key_function.validity_is_fixed(),
            meanwhile,
        }
    }

    /// Makes the `i`th key when it is the next one.
    fn make_next(&mut self, i: usize) -> std::result::Result<(), InvalidKey> {
        if i != self.ends.len() {
            return Ok(());
        }
        let key = self.keys.get(i).map_or("", AsRef::as_ref);
        if self.fixed && i > 0 {
            self.key_function.write_key(key, &mut self.buf);
        } else {
            write_valid_key(self.key_function, key, &mut self.buf)?;
        }
        self.ends.push(self.buf.len());
        Ok(())
    }

    /// Every wire key, in the order of the caller's keys.
    pub(crate) fn all(&mut self) -> Result<Vec<&[u8]>> {
        for i in self.ends.len()..self.keys.len() {
            self.make_next(i)?;
        }
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
}

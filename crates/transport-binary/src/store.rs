//! Writing: stores (with the item size and exptime checks before anything is sent),
//! deletes, and `incr`/`decr`.

use std::os::raw::c_char;

use libmemcached_sys::*;
use newcache_transport::{check_key, Error, Result, Store, StoreMode, StoreStatus};

use crate::errors::{err_message, BACKEND};
use crate::pool::Handle;
use crate::BinaryTransport;

/// A store or delete that libmemcached only queued (`MEMCACHED_BUFFERED`): its answer was
/// never read, so its outcome is not known. An error, never a status: an `add` of a taken
/// key or a `cas` with an out-of-date token read as `Stored` (an outside audit).
fn unanswered(command: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        code: MEMCACHED_BUFFERED as i32,
        message: format!(
            "libmemcached queued the {command} without reading memcached's answer (buffer_requests), so whether it was applied is not known; turn buffer_requests off"
        ),
    }
}

/// True when memcached's `incr` would read `value` as a 64-bit decimal number.
fn is_decimal(value: &[u8]) -> bool {
    std::str::from_utf8(value)
        .ok()
        .map(|s| s.trim_end_matches([' ', '\r', '\n', '\0']))
        .is_some_and(|s| !s.starts_with('+') && s.parse::<u64>().is_ok())
}

impl BinaryTransport {
    /// Runs one request whose key was checked: a value over `item_size_limit` is refused
    /// without being sent, and a `set` of one deletes the key instead, as memcached unlinks
    /// the old item of a `set` it refuses as too large (which it also does when it is the
    /// server that refuses: `MEMCACHED_E2BIG`). `position`: where the key was placed on `h`
    /// before the call (it names the server in errors: [`label_at`](Self::label_at)).
    pub(crate) fn store_checked(
        &self,
        h: &Handle,
        r: &Store<'_>,
        position: Option<usize>,
    ) -> Result<StoreStatus> {
        if r.is_too_large(self.item_size_limit) {
            if r.mode == StoreMode::Set {
                self.delete_on(h, r.key, position)?;
            }
            return Err(self.over_limit(r, position));
        }
        self.store_on(h, r, position)
    }

    /// The error for `r`, over `item_size_limit` and refused before it is sent: naming the
    /// limit of the key's server when that is lower and known (the server refused a value
    /// within a minute, and said its limit), not the configured one. A caller sizing values
    /// by the limit named failed again (an outside audit: a 2 MB value for a server at `-I
    /// 512k` said 1,048,513 bytes fit, after the server had said 524,225). Not asked here:
    /// a hung server made each such refusal wait out the poll timeout.
    pub(crate) fn over_limit(&self, r: &Store<'_>, position: Option<usize>) -> Error {
        let max = position
            .and_then(|p| self.server_at(p))
            .and_then(|index| self.item_size_max.get(index)?.known())
            .flatten();
        r.refused_by_server_at(max, self.item_size_limit)
    }

    /// Text mode only: memcached's text protocol reads an exptime as a signed 32-bit number,
    /// so one past `i32::MAX` (an absolute time after 2038-01-19 03:14:07 UTC) would read as
    /// negative and the item would be gone at once, with `set` reporting success. Refused,
    /// nothing sent. The binary protocol reads it unsigned and keeps it exactly.
    pub(crate) fn check_exptime(&self, exptime: u32) -> Result<()> {
        if self.binary {
            return Ok(());
        }
        newcache_transport::check_exptime(exptime)
    }

    fn store_on(&self, h: &Handle, r: &Store<'_>, position: Option<usize>) -> Result<StoreStatus> {
        h.begin();
        let (p, k, kl) = (h.as_ptr(), r.key.as_ptr().cast::<c_char>(), r.key.len());
        let (v, vl) = (r.value.as_ptr().cast::<c_char>(), r.value.len());
        let (exp, fl) = (r.exptime as time_t, r.flags);
        // SAFETY: p is a live handle used by this thread only; the key and value buffers
        // are valid for the lengths given and outlive the call.
        let rc = unsafe {
            match r.mode {
                StoreMode::Set => memcached_set(p, k, kl, v, vl, exp, fl),
                StoreMode::Add => memcached_add(p, k, kl, v, vl, exp, fl),
                StoreMode::Replace => memcached_replace(p, k, kl, v, vl, exp, fl),
                StoreMode::Append => memcached_append(p, k, kl, v, vl, exp, fl),
                StoreMode::Prepend => memcached_prepend(p, k, kl, v, vl, exp, fl),
                StoreMode::Cas(cas) => memcached_cas(p, k, kl, v, vl, exp, fl, cas),
            }
        };
        self.check_no_stray_item(h, r.key, position)?;
        match (r.mode, rc) {
            (_, MEMCACHED_SUCCESS | MEMCACHED_STORED) => Ok(StoreStatus::Stored),
            // Queued, its answer left unread (`buffer_requests`, which the behaviors refuse;
            // libmemcached 1.1.4 buffers only sets). Whether an add, replace, append,
            // prepend or cas was stored is the server's answer, which no one read.
            (StoreMode::Set, MEMCACHED_BUFFERED) => Ok(StoreStatus::Stored),
            (mode, MEMCACHED_BUFFERED) => Err(unanswered(mode.command())),
            (StoreMode::Cas(_), MEMCACHED_DATA_EXISTS) => Ok(StoreStatus::Exists),
            (StoreMode::Cas(_), MEMCACHED_NOTFOUND) => Ok(StoreStatus::NotFound),
            // The binary protocol answers add on a taken key with "exists" and replace,
            // append or prepend on a free key with "not found".
            (_, MEMCACHED_NOTSTORED | MEMCACHED_DATA_EXISTS | MEMCACHED_NOTFOUND) => {
                Ok(StoreStatus::NotStored)
            }
            // The server's -I is below item_size_limit: named with its limit, asked of it.
            (_, MEMCACHED_E2BIG) => {
                let max = position.and_then(|p| self.server_at(p)).and_then(|index| {
                    let max = self.item_size_max_of(h, index);
                    // Kept a minute, for the refusals made before sending (`over_limit`).
                    if let Some(known) = self.item_size_max.get(index) {
                        known.learn(max);
                    }
                    max
                });
                Err(r.refused_by_server_at(max, self.item_size_limit))
            }
            (mode, rc) => Err(self.error(h, rc, self.label_at(position), mode.command())),
        }
    }

    /// `position`: where the key was placed on `h` before the call.
    pub(crate) fn delete_on(
        &self,
        h: &Handle,
        key: &[u8],
        position: Option<usize>,
    ) -> Result<bool> {
        h.begin();
        // SAFETY: h is a live handle used by this thread only; the key outlives the call.
        let rc = unsafe { memcached_delete(h.as_ptr(), key.as_ptr().cast(), key.len(), 0) };
        self.check_no_stray_item(h, key, position)?;
        match rc {
            MEMCACHED_SUCCESS | MEMCACHED_DELETED => Ok(true),
            MEMCACHED_NOTFOUND => Ok(false),
            // Queued, its answer left unread: whether the key held an item is not known.
            MEMCACHED_BUFFERED => Err(unanswered("delete")),
            rc => Err(self.error(h, rc, self.label_at(position), "delete")),
        }
    }

    pub(crate) fn incr_decr(&self, key: &[u8], delta: u64, incr: bool) -> Result<Option<u64>> {
        check_key(key)?;
        self.on_key(key, |h, position| {
            self.incr_decr_on(h, key, delta, incr, position)
        })
    }

    fn incr_decr_on(
        &self,
        h: &Handle,
        key: &[u8],
        delta: u64,
        incr: bool,
        position: Option<usize>,
    ) -> Result<Option<u64>> {
        // A refusal for want of SASL aborts the process in libmemcached: asked first.
        self.admit(h, key, position)?;
        let (p, k, kl) = (h.as_ptr(), key.as_ptr().cast::<c_char>(), key.len());
        let mut value = 0u64;
        // SAFETY: p is a live handle used by this thread only; the key outlives the call
        // and value is a valid out pointer. The key is its own group key, which places it
        // exactly as memcached_increment does, with a 64-bit delta.
        let rc = unsafe {
            if incr {
                memcached_increment_by_key(p, k, kl, k, kl, delta, &mut value)
            } else {
                memcached_decrement_by_key(p, k, kl, k, kl, delta, &mut value)
            }
        };
        self.check_no_stray_item(h, key, position)?;
        let command = if incr { "incr" } else { "decr" };
        match rc {
            MEMCACHED_SUCCESS if self.binary && value == u64::MAX => {
                self.counter_or_stray(h, key, position, command)
            }
            MEMCACHED_SUCCESS => Ok(Some(value)),
            MEMCACHED_NOTFOUND => Ok(None),
            rc => {
                let err = self.error(h, rc, self.label_at(position), command);
                if self.binary && rc == MEMCACHED_UNKNOWN_READ_FAILURE {
                    // memcached answered DELTA_BADVAL ("non-numeric value"); libmemcached 1.1.4
                    // discards that body and reports an unknown read failure. Tell the two
                    // apart by the value itself.
                    let asked: Vec<usize> = position.into_iter().collect();
                    if let Ok(items) = self.fetch(h, &[key], &asked, &|| {}, &mut Vec::new()) {
                        if items
                            .first()
                            .and_then(Option::as_ref)
                            .is_some_and(|i| !is_decimal(&i.value))
                        {
                            return Err(Error::Client {
                                server: self.label_at(position),
                                message: format!(
                                    "cannot increment or decrement non-numeric value (memcached's binary status DELTA_BADVAL; libmemcached reported: {})",
                                    err_message(&err)
                                ),
                            });
                        }
                    }
                }
                Err(err)
            }
        }
    }
}

impl BinaryTransport {
    /// A binary `incr`/`decr` that libmemcached called a success with the counter at
    /// `u64::MAX`: libmemcached leaves that there when the reply it read has no value (a
    /// duplicated or stray reply to another request, a `SET`'s): an outside audit got
    /// `Ok(18446744073709551615)` 11 to 17 times per run under late duplicates. The
    /// connections are closed, and the counter is read on a new one: the increment stands
    /// when it holds that very number, else the call fails ([`Error::Protocol`]; the
    /// server may have applied it).
    fn counter_or_stray(
        &self,
        h: &Handle,
        key: &[u8],
        position: Option<usize>,
        command: &str,
    ) -> Result<Option<u64>> {
        self.reset(h);
        let asked: Vec<usize> = position.into_iter().collect();
        let items = self.fetch(h, &[key], &asked, &|| {}, &mut Vec::new())?;
        if items
            .first()
            .and_then(Option::as_ref)
            .is_some_and(|i| i.value == u64::MAX.to_string().as_bytes())
        {
            return Ok(Some(u64::MAX));
        }
        Err(Error::Protocol {
            server: self.label_at(position),
            detail: format!(
                "{command} read a reply with no value (a duplicated or stray reply to another request), so the connections were closed; the server may have applied the {command}"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BinaryConfig;

    /// `buffer_requests` is refused by the configuration; forced on a handle, libmemcached
    /// queues a delete and answers `MEMCACHED_BUFFERED`, which is an error naming it, not
    /// `true` (the key never held an item).
    #[test]
    fn a_buffered_delete_is_an_error_not_a_deletion() {
        let m = newcache_testkit::Memcached::start();
        for binary in [true, false] {
            let t = BinaryTransport::new(BinaryConfig {
                binary_protocol: binary,
                ..BinaryConfig::new([m.addr()])
            })
            .unwrap();
            let h = t.lease().unwrap();
            // SAFETY: h is a live handle used by this thread only; setting a behavior only
            // stores it.
            let rc = unsafe {
                memcached_behavior_set(h.as_ptr(), MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 1)
            };
            assert_eq!(rc, MEMCACHED_SUCCESS);
            match t.delete_on(&h, b"never-stored", Some(0)) {
                Err(Error::Backend { code, message, .. }) => {
                    assert_eq!(code, MEMCACHED_BUFFERED as i32, "{message}");
                    assert!(message.contains("buffer_requests"), "{message}");
                }
                other => panic!("binary {binary}: {other:?}"),
            }
        }
    }

    #[test]
    fn decimal_values_are_what_memcached_increments() {
        for ok in [&b"0"[..], b"42", b"18446744073709551615", b"7   "] {
            assert!(is_decimal(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"abc",
            b"12ab",
            b"-1",
            b"18446744073709551616",
            b"+1",
        ] {
            assert!(!is_decimal(bad), "{bad:?}");
        }
    }
}

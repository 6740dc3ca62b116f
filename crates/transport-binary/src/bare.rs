//! libmemcached with nothing around it: one handle, the C calls a C program would make, no
//! pool, no key checks, no [`Item`](newcache_transport::Item) built. The benchmarks' "raw
//! libmemcached" peer, so newcache is measured against the C library itself and not against
//! our own wrapper of it. Not a client to build on: it skips every check the transport makes.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use libmemcached_sys::*;

/// One libmemcached handle on one server.
pub struct Bare {
    handle: NonNull<memcached_st>,
    result: Box<MaybeUninit<memcached_result_st>>,
}

// SAFETY: the handle and the result storage are owned by this value alone and only used
// through `&mut self`; libmemcached handles may move between threads when not shared.
unsafe impl Send for Bare {}

impl Bare {
    /// A handle on `host:port`, binary or text protocol, with `TCP_NODELAY` on (without it a
    /// binary-protocol miss waits ~44 ms for Nagle and delayed ACK). `None` when libmemcached
    /// refuses the configuration.
    pub fn new(host: &str, port: u16, binary: bool) -> Option<Bare> {
        let host = CString::new(host).ok()?;
        // SAFETY: NULL asks libmemcached to allocate the handle.
        let handle = NonNull::new(unsafe { memcached_create(ptr::null_mut()) })?;
        let mut result = Box::new(MaybeUninit::<memcached_result_st>::zeroed());
        // SAFETY: the handle is live and ours; the result storage is a heap slot of the
        // header's size and alignment that does not move while the handle lives.
        let created = unsafe { memcached_result_create(handle.as_ptr(), result.as_mut_ptr()) };
        if created.is_null() {
            // SAFETY: the handle is ours and not used after this.
            unsafe { memcached_free(handle.as_ptr()) };
            return None;
        }
        // From here on, Drop frees both.
        let bare = Bare { handle, result };
        let m = bare.handle.as_ptr();
        // SAFETY: live handle used by this thread only; the host string outlives the call
        // (libmemcached copies it).
        let ok = unsafe {
            memcached_success(memcached_behavior_set(
                m,
                MEMCACHED_BEHAVIOR_BINARY_PROTOCOL,
                u64::from(binary),
            )) && memcached_success(memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1))
                && memcached_success(memcached_server_add(m, host.as_ptr(), port))
        };
        ok.then_some(bare)
    }

    /// `memcached_get`: the value's length on a hit (the buffer libmemcached mallocs is
    /// freed), `None` on a miss or an error.
    pub fn get(&mut self, key: &[u8]) -> Option<usize> {
        let (mut len, mut flags, mut rc) = (0usize, 0u32, MEMCACHED_SUCCESS);
        // SAFETY: live handle used by this thread only; the key buffer outlives the call; the
        // out pointers are valid locals.
        let value = unsafe {
            memcached_get(
                self.handle.as_ptr(),
                key.as_ptr().cast(),
                key.len(),
                &mut len,
                &mut flags,
                &mut rc,
            )
        };
        if value.is_null() {
            return None;
        }
        // SAFETY: memcached_get returned a malloc'd buffer that the caller owns.
        unsafe { free(value.cast()) };
        Some(len)
    }

    /// `memcached_set` with no expiry; true when stored.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> bool {
        // SAFETY: live handle used by this thread only; key and value outlive the call.
        let rc = unsafe {
            memcached_set(
                self.handle.as_ptr(),
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
                0,
                0,
            )
        };
        memcached_success(rc)
    }

    /// `memcached_mget` then `memcached_fetch_result` into storage we own, as a C program
    /// reads a multi-get: the number of hits and the bytes of their values.
    pub fn get_many(&mut self, keys: &[&[u8]]) -> (usize, usize) {
        let ptrs: Vec<*const std::os::raw::c_char> =
            keys.iter().map(|k| k.as_ptr().cast()).collect();
        let lens: Vec<usize> = keys.iter().map(|k| k.len()).collect();
        let m = self.handle.as_ptr();
        // SAFETY: live handle; the key pointer and length arrays outlive the call and hold
        // keys.len() entries each.
        let rc = unsafe { memcached_mget(m, ptrs.as_ptr(), lens.as_ptr(), keys.len()) };
        if !memcached_success(rc) {
            return (0, 0);
        }
        let (mut hits, mut bytes) = (0, 0);
        loop {
            let mut rc = MEMCACHED_SUCCESS;
            // SAFETY: live handle; the result storage was initialised by
            // memcached_result_create for this handle and is ours, so fetch_result only
            // resets it at the end.
            let got = unsafe { memcached_fetch_result(m, self.result.as_mut_ptr(), &mut rc) };
            if got.is_null() {
                break;
            }
            hits += 1;
            // SAFETY: `got` is our result, just filled.
            bytes += unsafe { memcached_result_length(got) };
        }
        (hits, bytes)
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        // SAFETY: the result was initialised in new() in storage we own (so this frees only
        // its value buffer), and the handle is ours and freed once, after it.
        unsafe {
            memcached_result_free(self.result.as_mut_ptr());
            memcached_free(self.handle.as_ptr());
        }
    }
}

//! libmemcached with nothing around it: one handle and the C calls a C program makes, through
//! the bare `libmemcached-sys` declarations, with nothing of newcache around them (no pool, no
//! key checks, no [`Item`](newcache_transport::Item) built, no copy of the value). The
//! benchmarks' baseline rows (`libmemcached-sys-text`, `libmemcached-sys-binary`), the
//! concurrency bench's handle per thread and the `syscalls` helper use it, so newcache is
//! measured against the C library itself and not against our own wrapper of it.
//!
//! Not a client to build on: it skips every check the transport makes.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::raw::c_char;
use std::ptr::{self, NonNull};

use libmemcached_sys as sys;

/// How a handle talks to its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `MEMCACHED_BEHAVIOR_BINARY_PROTOCOL`: the binary protocol, else the text one.
    pub binary: bool,
    /// `MEMCACHED_BEHAVIOR_TCP_NODELAY`: Nagle's algorithm off. libmemcached's default is
    /// off; the baseline rows turn it on.
    pub tcp_nodelay: bool,
}

impl Options {
    /// Text protocol, `TCP_NODELAY` on (the `libmemcached-sys-text` row).
    pub const TEXT: Options = Options {
        binary: false,
        tcp_nodelay: true,
    };
    /// Binary protocol, `TCP_NODELAY` on (the `libmemcached-sys-binary` row).
    pub const BINARY: Options = Options {
        binary: true,
        tcp_nodelay: true,
    };
}

/// Keys laid out as `memcached_mget` takes them: an array of pointers and an array of
/// lengths, built once (as a C program would) so a multi-get allocates nothing in Rust.
pub struct Keys {
    /// The key bytes the pointers point into; never changed after `new`.
    owned: Vec<Vec<u8>>,
    pointers: Vec<*const c_char>,
    lengths: Vec<usize>,
}

impl Keys {
    /// The arrays for `keys`.
    pub fn new<K: AsRef<[u8]>>(keys: &[K]) -> Keys {
        let owned: Vec<Vec<u8>> = keys.iter().map(|k| k.as_ref().to_vec()).collect();
        // Each inner Vec's heap buffer stays where it is when `owned` moves, so the pointers
        // stay valid for as long as `owned` lives unchanged.
        let pointers = owned.iter().map(|k| k.as_ptr().cast()).collect();
        let lengths = owned.iter().map(Vec::len).collect();
        Keys {
            owned,
            pointers,
            lengths,
        }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.owned.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.owned.is_empty()
    }
}

/// One libmemcached handle on one server, and a result struct in storage it owns for
/// `memcached_fetch_result`.
pub struct Bare {
    handle: NonNull<sys::memcached_st>,
    /// Initialised by `memcached_result_create(handle, this)`; boxed so it never moves.
    result: Box<MaybeUninit<sys::memcached_result_st>>,
}

// SAFETY: a handle and its result storage are owned by this value alone and only touched
// through `&mut self`; libmemcached keeps no thread-local state for a handle, so it may be
// used from another thread as long as one thread at a time does.
unsafe impl Send for Bare {}

impl Bare {
    /// A handle on `host:port`. Connects lazily, on the first operation.
    pub fn new(host: &str, port: u16, options: Options) -> Result<Bare, String> {
        let host = CString::new(host).map_err(|e| format!("host: {e}"))?;
        // SAFETY: a NULL argument asks libmemcached to allocate and initialise the handle.
        let raw = unsafe { sys::memcached_create(ptr::null_mut()) };
        let handle = NonNull::new(raw).ok_or("memcached_create failed")?;
        let mut result = Box::new(MaybeUninit::<sys::memcached_result_st>::zeroed());
        // SAFETY: the handle is live and ours; the storage has the header's size and
        // alignment (checked by libmemcached-sys's layout test) and is a heap slot that does
        // not move while the handle lives.
        let created = unsafe { sys::memcached_result_create(handle.as_ptr(), result.as_mut_ptr()) };
        if created.is_null() {
            // SAFETY: the handle is ours, created above, and not used after this.
            unsafe { sys::memcached_free(handle.as_ptr()) };
            return Err("memcached_result_create failed".into());
        }
        // From here on Drop frees both.
        let h = Bare { handle, result };
        h.behavior(
            sys::MEMCACHED_BEHAVIOR_BINARY_PROTOCOL,
            u64::from(options.binary),
        )?;
        h.behavior(
            sys::MEMCACHED_BEHAVIOR_TCP_NODELAY,
            u64::from(options.tcp_nodelay),
        )?;
        // SAFETY: live handle; libmemcached copies the host name, which outlives the call.
        let rc = unsafe { sys::memcached_server_add(h.handle.as_ptr(), host.as_ptr(), port) };
        h.check(rc, "memcached_server_add")?;
        Ok(h)
    }

    /// A handle on `addr` (`host:port`).
    pub fn connect(addr: &str, options: Options) -> Result<Bare, String> {
        let (host, port) = addr.rsplit_once(':').ok_or("address without a port")?;
        let port = port.parse().map_err(|e| format!("port {port:?}: {e}"))?;
        Bare::new(host, port, options)
    }

    fn behavior(&self, flag: sys::memcached_behavior_t, value: u64) -> Result<(), String> {
        // SAFETY: live handle, used by one thread at a time (`Bare` is not `Sync`).
        let rc = unsafe { sys::memcached_behavior_set(self.handle.as_ptr(), flag, value) };
        self.check(rc, "memcached_behavior_set")
    }

    fn check(&self, rc: sys::memcached_return_t, what: &str) -> Result<(), String> {
        if sys::memcached_success(rc) {
            return Ok(());
        }
        // SAFETY: live handle; strerror returns a static NUL-terminated string (or NULL).
        let msg = unsafe { sys::memcached_strerror(self.handle.as_ptr(), rc) };
        let msg = if msg.is_null() {
            format!("error {rc}")
        } else {
            // SAFETY: non-NULL, NUL-terminated and static (see above).
            unsafe { CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        Err(format!("{what}: {msg}"))
    }

    /// `memcached_get`: the value's length on a hit, `None` on a miss. The buffer
    /// libmemcached mallocs for the value is freed, as a C caller must.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<usize>, String> {
        let (mut len, mut flags, mut rc) = (0usize, 0u32, sys::MEMCACHED_SUCCESS);
        // SAFETY: live handle used through `&mut self`; the key outlives the call; the out
        // pointers are valid locals.
        let value = unsafe {
            sys::memcached_get(
                self.handle.as_ptr(),
                key.as_ptr().cast(),
                key.len(),
                &mut len,
                &mut flags,
                &mut rc,
            )
        };
        if value.is_null() {
            return match rc {
                sys::MEMCACHED_NOTFOUND => Ok(None),
                // A hit of an empty value comes back as NULL with success.
                rc if sys::memcached_success(rc) => Ok(Some(0)),
                rc => self.check(rc, "memcached_get").map(|()| None),
            };
        }
        // SAFETY: memcached_get returned a malloc'd buffer that the caller owns; freed once.
        unsafe { sys::free(value.cast()) };
        Ok(Some(len))
    }

    /// `memcached_set` with no expiry and no flags.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        // SAFETY: live handle used through `&mut self`; key and value outlive the call.
        let rc = unsafe {
            sys::memcached_set(
                self.handle.as_ptr(),
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
                0,
                0,
            )
        };
        self.check(rc, "memcached_set")
    }

    /// `memcached_mget`, then `memcached_fetch_result` into the handle's own result until it
    /// returns NULL, as a C program reads a multi-get: the number of hits and the bytes of
    /// their values (read through `memcached_result_length`; nothing is copied out).
    pub fn get_many(&mut self, keys: &Keys) -> Result<(usize, usize), String> {
        let (mut hits, mut bytes) = (0, 0);
        self.mget(keys, |len| {
            hits += 1;
            bytes += len;
        })?;
        Ok((hits, bytes))
    }

    /// A one-key `memcached_mget` + `memcached_fetch_result` (how libmemcached-based
    /// wrappers, ours included, read one key): the value's length on a hit.
    pub fn get_via_mget(&mut self, keys: &Keys) -> Result<Option<usize>, String> {
        let mut found = None;
        self.mget(keys, |len| found = Some(len))?;
        Ok(found)
    }

    /// `memcached_mget` of `keys`, then every fetched result's value length to `each`.
    fn mget(&mut self, keys: &Keys, mut each: impl FnMut(usize)) -> Result<(), String> {
        let m = self.handle.as_ptr();
        // SAFETY: live handle used through `&mut self`; both arrays hold keys.len() entries
        // and, with the key bytes they point to, outlive the call (libmemcached copies the
        // keys into its write buffer).
        let rc = unsafe {
            sys::memcached_mget(m, keys.pointers.as_ptr(), keys.lengths.as_ptr(), keys.len())
        };
        self.check(rc, "memcached_mget")?;
        loop {
            let mut rc = sys::MEMCACHED_SUCCESS;
            // SAFETY: live handle; the result storage was initialised by
            // memcached_result_create for this handle and is ours (not libmemcached's), so
            // the fetch fills it and, at the end, only resets it: it is never freed here.
            let got = unsafe { sys::memcached_fetch_result(m, self.result.as_mut_ptr(), &mut rc) };
            if got.is_null() {
                return match rc {
                    sys::MEMCACHED_END | sys::MEMCACHED_NOTFOUND => Ok(()),
                    rc => self.check(rc, "memcached_fetch_result"),
                };
            }
            // SAFETY: `got` is our result, just filled by the fetch.
            each(unsafe { sys::memcached_result_length(got) });
        }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        // SAFETY: the result was initialised in `new` in storage we own, so this frees only
        // its value buffer; the handle is ours and freed once, after the result.
        unsafe {
            sys::memcached_result_free(self.result.as_mut_ptr());
            sys::memcached_free(self.handle.as_ptr());
        }
    }
}

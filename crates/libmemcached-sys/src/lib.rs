//! Raw FFI declarations for [libmemcached] 1.x, the C memcached client that pylibmc wraps.
//!
//! Hand-written from the headers of libmemcached 1.1.4 (`/usr/include/libmemcached-1.0/`,
//! Debian 12's `libmemcached-dev`); only what newcache uses is declared. No bindgen or
//! libclang is needed at build time. The test `tests/layout.rs` compiles a small C program
//! against the installed headers and checks every struct size, field offset and enum value
//! declared here against it.
//!
//! # Installing libmemcached
//!
//! * Debian/Ubuntu: `apt-get install libmemcached-dev`
//! * Homebrew: `brew install libmemcached`
//!
//! `build.rs` finds it with `pkg-config` and links `-lmemcached` only (libmemcached itself
//! depends on libsasl2 and libhashkit; `libmemcachedutil`, the C pool, is not used).
//!
//! # Conventions
//!
//! * C enums are plain integer type aliases with one constant per enumerator
//!   ([`memcached_return_t`], [`memcached_behavior_t`], [`memcached_hash_t`],
//!   [`memcached_server_distribution_t`]): a Rust `enum` would be undefined behavior the day a
//!   newer libmemcached returns a value it does not list.
//! * [`memcached_st`], [`memcached_instance_st`] and [`memcached_server_st`] are opaque.
//! * [`memcached_result_st`] is declared with the header's layout so a caller can own the
//!   storage (`memcached_result_create(ptr, &mut storage)`). A result created with a NULL
//!   storage pointer is heap-allocated and **freed by [`memcached_fetch_result`] itself** when
//!   a fetch ends; freeing it again is a double free.
//! * Buffers returned by [`memcached_get`] (and [`memcached_stat_get_value`],
//!   [`memcached_stat_get_keys`]) are `malloc`ed: release them with [`free`].
//! * One thing is read past the public API: a server's socket, its unread buffered bytes
//!   and its retry time ([`memcached_instance_fields`]), from libmemcached 1.1's private
//!   instance layout ([`instance_layout`]). It answers `None` on any other version, and on
//!   any server whose public fields disagree with what it reads; `tests/calls.rs` checks
//!   it against the linked library and a real server.
//!
//! [libmemcached]: https://awesomized.github.io/libmemcached/
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable
    )
)]
#![allow(non_camel_case_types)]

use std::marker::{PhantomData, PhantomPinned};
use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_ulonglong, c_void};

pub use libc::{free, in_port_t, pid_t, time_t};

/// The libmemcached version these declarations were written from and tested with.
pub const TESTED_VERSION: &str = "1.1.4";

/// `MEMCACHED_MAX_KEY`: the longest key plus its terminating NUL.
pub const MEMCACHED_MAX_KEY: usize = 251;
/// `MEMCACHED_VERSION_STRING_LENGTH`.
pub const MEMCACHED_VERSION_STRING_LENGTH: usize = 24;
/// `MEMCACHED_DEFAULT_TIMEOUT`: the default poll (I/O wait) timeout in milliseconds.
pub const MEMCACHED_DEFAULT_TIMEOUT: u64 = 5000;
/// `MEMCACHED_DEFAULT_CONNECT_TIMEOUT`, in milliseconds.
pub const MEMCACHED_DEFAULT_CONNECT_TIMEOUT: u64 = 4000;
/// `MEMCACHED_SERVER_FAILURE_LIMIT`.
pub const MEMCACHED_SERVER_FAILURE_LIMIT: u64 = 5;
/// `MEMCACHED_SERVER_FAILURE_RETRY_TIMEOUT`, in seconds.
pub const MEMCACHED_SERVER_FAILURE_RETRY_TIMEOUT: u64 = 2;
/// `MEMCACHED_SERVER_FAILURE_DEAD_TIMEOUT`, in seconds.
pub const MEMCACHED_SERVER_FAILURE_DEAD_TIMEOUT: u64 = 0;
/// `MEMCACHED_EXPIRATION_NOT_ADD`: an incr/decr expiration meaning "do not create the item".
pub const MEMCACHED_EXPIRATION_NOT_ADD: u32 = 0xffff_ffff;

// ---------------------------------------------------------------------------------------
// Opaque handles

/// `memcached_st`: one client handle (servers, behaviors, connections). Opaque; use it only
/// through pointers. A handle must be used by one thread at a time.
#[repr(C)]
pub struct memcached_st {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `memcached_instance_st`: one server of a handle. Opaque.
#[repr(C)]
pub struct memcached_instance_st {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `memcached_server_st`: one entry of a server list built by [`memcached_servers_parse`].
/// Opaque.
#[repr(C)]
pub struct memcached_server_st {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `memcached_server_list_st`: a server list (an array allocated by libmemcached).
pub type memcached_server_list_st = *mut memcached_server_st;

// ---------------------------------------------------------------------------------------
// Structs with a public layout

/// `memcached_string_st`: libmemcached's growable string, embedded in
/// [`memcached_result_st`]. Fields are libmemcached's; do not modify them.
#[repr(C)]
#[derive(Debug)]
pub struct memcached_string_st {
    /// One past the last byte written.
    pub end: *mut c_char,
    /// The heap buffer.
    pub string: *mut c_char,
    /// The buffer's capacity.
    pub current_size: usize,
    /// The owning handle.
    pub root: *mut memcached_st,
    /// `struct { bool is_allocated: 1; bool is_initialized: 1; }`: one byte of bit fields.
    pub options: u8,
}

/// `memcached_result_st`: one fetched item. Declared with the header's layout (checked by
/// `tests/layout.rs`) so a caller can pass storage it owns to [`memcached_result_create`];
/// read it through the `memcached_result_*` accessors, not the fields.
#[repr(C)]
#[derive(Debug)]
pub struct memcached_result_st {
    /// The item's client flags.
    pub item_flags: u32,
    /// The item's expiration (unused by fetches).
    pub item_expiration: time_t,
    /// Length of `item_key`.
    pub key_length: usize,
    /// The item's CAS unique.
    pub item_cas: u64,
    /// The owning handle.
    pub root: *mut memcached_st,
    /// The value.
    pub value: memcached_string_st,
    /// The value of an incr/decr.
    pub numeric_value: u64,
    /// How many results this struct has held during the current fetch.
    pub count: u64,
    /// The key, NUL-terminated.
    pub item_key: [c_char; MEMCACHED_MAX_KEY],
    /// `struct { bool is_allocated: 1; bool is_initialized: 1; }`: one byte of bit fields.
    pub options: u8,
}

/// `memcached_stat_st`: the fixed set of statistics [`memcached_stat`] parses for one server.
#[repr(C)]
#[derive(Debug)]
#[allow(missing_docs)]
pub struct memcached_stat_st {
    pub connection_structures: c_ulong,
    pub curr_connections: c_ulong,
    pub curr_items: c_ulong,
    pub pid: pid_t,
    pub pointer_size: c_ulong,
    pub rusage_system_microseconds: c_ulong,
    pub rusage_system_seconds: c_ulong,
    pub rusage_user_microseconds: c_ulong,
    pub rusage_user_seconds: c_ulong,
    pub threads: c_ulong,
    pub time: c_ulong,
    pub total_connections: c_ulong,
    pub total_items: c_ulong,
    pub uptime: c_ulong,
    pub bytes: c_ulonglong,
    pub bytes_read: c_ulonglong,
    pub bytes_written: c_ulonglong,
    pub cmd_get: c_ulonglong,
    pub cmd_set: c_ulonglong,
    pub evictions: c_ulonglong,
    pub get_hits: c_ulonglong,
    pub get_misses: c_ulonglong,
    pub limit_maxbytes: c_ulonglong,
    pub version: [c_char; MEMCACHED_VERSION_STRING_LENGTH],
    pub __future: *mut c_void,
    pub root: *mut memcached_st,
}

// ---------------------------------------------------------------------------------------
// Enums

/// `enum memcached_return_t`.
pub type memcached_return_t = c_uint;

/// Declares one constant per enumerator, and `$all`: every one of them by name, in the
/// header's order (for tests that must cover each value, such as `tests/layout.rs`).
macro_rules! constants {
    ($ty:ident, $all:ident { $($name:ident = $value:expr,)* }) => {
        $(
            #[doc = concat!("`", stringify!($name), "`")]
            pub const $name: $ty = $value;
        )*
        #[doc = concat!("Every `", stringify!($ty), "` enumerator declared here, by name, in the header's order.")]
        pub const $all: &[(&str, $ty)] = &[$((stringify!($name), $name),)*];
    };
}

constants!(memcached_return_t, RETURN_VALUES {
    MEMCACHED_SUCCESS = 0,
    MEMCACHED_FAILURE = 1,
    MEMCACHED_HOST_LOOKUP_FAILURE = 2,
    MEMCACHED_CONNECTION_FAILURE = 3,
    MEMCACHED_CONNECTION_BIND_FAILURE = 4,
    MEMCACHED_WRITE_FAILURE = 5,
    MEMCACHED_READ_FAILURE = 6,
    MEMCACHED_UNKNOWN_READ_FAILURE = 7,
    MEMCACHED_PROTOCOL_ERROR = 8,
    MEMCACHED_CLIENT_ERROR = 9,
    MEMCACHED_SERVER_ERROR = 10,
    MEMCACHED_ERROR = 11,
    MEMCACHED_DATA_EXISTS = 12,
    MEMCACHED_DATA_DOES_NOT_EXIST = 13,
    MEMCACHED_NOTSTORED = 14,
    MEMCACHED_STORED = 15,
    MEMCACHED_NOTFOUND = 16,
    MEMCACHED_MEMORY_ALLOCATION_FAILURE = 17,
    MEMCACHED_PARTIAL_READ = 18,
    MEMCACHED_SOME_ERRORS = 19,
    MEMCACHED_NO_SERVERS = 20,
    MEMCACHED_END = 21,
    MEMCACHED_DELETED = 22,
    MEMCACHED_VALUE = 23,
    MEMCACHED_STAT = 24,
    MEMCACHED_ITEM = 25,
    MEMCACHED_ERRNO = 26,
    MEMCACHED_FAIL_UNIX_SOCKET = 27,
    MEMCACHED_NOT_SUPPORTED = 28,
    MEMCACHED_NO_KEY_PROVIDED = 29,
    MEMCACHED_FETCH_NOTFINISHED = 30,
    MEMCACHED_TIMEOUT = 31,
    MEMCACHED_BUFFERED = 32,
    MEMCACHED_BAD_KEY_PROVIDED = 33,
    MEMCACHED_INVALID_HOST_PROTOCOL = 34,
    MEMCACHED_SERVER_MARKED_DEAD = 35,
    MEMCACHED_UNKNOWN_STAT_KEY = 36,
    MEMCACHED_E2BIG = 37,
    MEMCACHED_INVALID_ARGUMENTS = 38,
    MEMCACHED_KEY_TOO_BIG = 39,
    MEMCACHED_AUTH_PROBLEM = 40,
    MEMCACHED_AUTH_FAILURE = 41,
    MEMCACHED_AUTH_CONTINUE = 42,
    MEMCACHED_PARSE_ERROR = 43,
    MEMCACHED_PARSE_USER_ERROR = 44,
    MEMCACHED_DEPRECATED = 45,
    MEMCACHED_IN_PROGRESS = 46,
    MEMCACHED_SERVER_TEMPORARILY_DISABLED = 47,
    MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE = 48,
    MEMCACHED_MAXIMUM_RETURN = 49,
    MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE = 11,
});

/// `enum memcached_behavior_t`.
pub type memcached_behavior_t = c_uint;

constants!(memcached_behavior_t, BEHAVIOR_VALUES {
    MEMCACHED_BEHAVIOR_NO_BLOCK = 0,
    MEMCACHED_BEHAVIOR_TCP_NODELAY = 1,
    MEMCACHED_BEHAVIOR_HASH = 2,
    MEMCACHED_BEHAVIOR_KETAMA = 3,
    MEMCACHED_BEHAVIOR_SOCKET_SEND_SIZE = 4,
    MEMCACHED_BEHAVIOR_SOCKET_RECV_SIZE = 5,
    MEMCACHED_BEHAVIOR_CACHE_LOOKUPS = 6,
    MEMCACHED_BEHAVIOR_SUPPORT_CAS = 7,
    MEMCACHED_BEHAVIOR_POLL_TIMEOUT = 8,
    MEMCACHED_BEHAVIOR_DISTRIBUTION = 9,
    MEMCACHED_BEHAVIOR_BUFFER_REQUESTS = 10,
    MEMCACHED_BEHAVIOR_USER_DATA = 11,
    MEMCACHED_BEHAVIOR_SORT_HOSTS = 12,
    MEMCACHED_BEHAVIOR_VERIFY_KEY = 13,
    MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT = 14,
    MEMCACHED_BEHAVIOR_RETRY_TIMEOUT = 15,
    MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED = 16,
    MEMCACHED_BEHAVIOR_KETAMA_HASH = 17,
    MEMCACHED_BEHAVIOR_BINARY_PROTOCOL = 18,
    MEMCACHED_BEHAVIOR_SND_TIMEOUT = 19,
    MEMCACHED_BEHAVIOR_RCV_TIMEOUT = 20,
    MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT = 21,
    MEMCACHED_BEHAVIOR_IO_MSG_WATERMARK = 22,
    MEMCACHED_BEHAVIOR_IO_BYTES_WATERMARK = 23,
    MEMCACHED_BEHAVIOR_IO_KEY_PREFETCH = 24,
    MEMCACHED_BEHAVIOR_HASH_WITH_PREFIX_KEY = 25,
    MEMCACHED_BEHAVIOR_NOREPLY = 26,
    MEMCACHED_BEHAVIOR_USE_UDP = 27,
    MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS = 28,
    MEMCACHED_BEHAVIOR_NUMBER_OF_REPLICAS = 29,
    MEMCACHED_BEHAVIOR_RANDOMIZE_REPLICA_READ = 30,
    MEMCACHED_BEHAVIOR_CORK = 31,
    MEMCACHED_BEHAVIOR_TCP_KEEPALIVE = 32,
    MEMCACHED_BEHAVIOR_TCP_KEEPIDLE = 33,
    MEMCACHED_BEHAVIOR_LOAD_FROM_FILE = 34,
    MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS = 35,
    MEMCACHED_BEHAVIOR_DEAD_TIMEOUT = 36,
    MEMCACHED_BEHAVIOR_SERVER_TIMEOUT_LIMIT = 37,
    MEMCACHED_BEHAVIOR_MAX = 38,
});

/// `enum memcached_hash_t`.
pub type memcached_hash_t = c_uint;

constants!(memcached_hash_t, HASH_VALUES {
    MEMCACHED_HASH_DEFAULT = 0,
    MEMCACHED_HASH_MD5 = 1,
    MEMCACHED_HASH_CRC = 2,
    MEMCACHED_HASH_FNV1_64 = 3,
    MEMCACHED_HASH_FNV1A_64 = 4,
    MEMCACHED_HASH_FNV1_32 = 5,
    MEMCACHED_HASH_FNV1A_32 = 6,
    MEMCACHED_HASH_HSIEH = 7,
    MEMCACHED_HASH_MURMUR = 8,
    MEMCACHED_HASH_JENKINS = 9,
    MEMCACHED_HASH_MURMUR3 = 10,
    MEMCACHED_HASH_CUSTOM = 11,
    MEMCACHED_HASH_MAX = 12,
});

/// `enum memcached_server_distribution_t`.
pub type memcached_server_distribution_t = c_uint;

constants!(memcached_server_distribution_t, DISTRIBUTION_VALUES {
    MEMCACHED_DISTRIBUTION_MODULA = 0,
    MEMCACHED_DISTRIBUTION_CONSISTENT = 1,
    MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA = 2,
    MEMCACHED_DISTRIBUTION_RANDOM = 3,
    MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA_SPY = 4,
    MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED = 5,
    MEMCACHED_DISTRIBUTION_VIRTUAL_BUCKET = 6,
    MEMCACHED_DISTRIBUTION_CONSISTENT_MAX = 7,
});

/// `memcached_success()` from `return.h` (a `static inline` function, so not linkable).
pub fn memcached_success(rc: memcached_return_t) -> bool {
    matches!(
        rc,
        MEMCACHED_BUFFERED
            | MEMCACHED_DELETED
            | MEMCACHED_END
            | MEMCACHED_ITEM
            | MEMCACHED_STAT
            | MEMCACHED_STORED
            | MEMCACHED_SUCCESS
            | MEMCACHED_VALUE
    )
}

/// `offsetof(memcached_st, result)` in libmemcached 1.1's public header
/// (`libmemcached-1.0/struct/memcached.h`): the handle's own result, which
/// [`memcached_get`] fills (and leaves filled on a hit). Checked against the installed
/// header by the layout test.
pub const MEMCACHED_ST_RESULT_OFFSET: usize = 160;

/// The handle's own result (`&ptr->result`): after a hit of [`memcached_get`] it holds that
/// item's CAS unique ([`memcached_result_cas`]), which `memcached_get` does not return.
///
/// # Safety
/// `ptr` must point to a live `memcached_st`; the pointer returned is valid as long as it
/// is, and is only to be read between `memcached_get` and the handle's next call.
pub unsafe fn memcached_st_result(ptr: *mut memcached_st) -> *mut memcached_result_st {
    // SAFETY: the caller gives a live handle; the field lies MEMCACHED_ST_RESULT_OFFSET
    // bytes into it, as the header declares (checked by the layout test).
    unsafe {
        ptr.cast::<u8>()
            .add(MEMCACHED_ST_RESULT_OFFSET)
            .cast::<memcached_result_st>()
    }
}

/// Byte offsets of the fields of libmemcached 1.1's **private** `memcached_instance_st`
/// (`src/libmemcached/instance.hpp`, not installed with the headers; the same in 1.1.0 to
/// 1.1.4, different in 1.0.x) that [`memcached_instance_fields`] reads. No public call gives
/// a server's socket or what is buffered on it, and a client that must not read a stale
/// reply needs both.
pub mod instance_layout {
    /// `uint32_t cursor_active_`: replies still expected ([`super::memcached_server_response_count`]).
    pub const CURSOR_ACTIVE: usize = 12;
    /// `in_port_t port_` ([`super::memcached_server_port`]).
    pub const PORT: usize = 16;
    /// `memcached_socket_t fd`: the connection's socket, -1 when not connected.
    pub const FD: usize = 20;
    /// `size_t read_buffer_length`: bytes read from the socket and not consumed yet.
    pub const READ_BUFFER_LENGTH: usize = 120;
    /// `time_t next_retry`: when a server left alone (or ejected) is tried again (Unix s).
    pub const NEXT_RETRY: usize = 152;
    /// `memcached_st *root`: the handle the server belongs to.
    pub const ROOT: usize = 160;
}

/// What [`memcached_instance_fields`] reads from a server of a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceFields {
    /// The connection's socket; negative when not connected.
    pub fd: c_int,
    /// Bytes libmemcached read from the socket and has not consumed.
    pub read_buffer_length: usize,
    /// Replies libmemcached still expects from the server.
    pub response_count: u32,
    /// When a server left alone or ejected is tried again (Unix seconds; 0: not set).
    pub next_retry: time_t,
}

/// True when the linked libmemcached is a 1.1.x, whose private instance layout
/// [`instance_layout`] describes (checked once per process).
pub fn instance_layout_known() -> bool {
    static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWN.get_or_init(|| {
        // SAFETY: memcached_lib_version returns a pointer to a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(memcached_lib_version()) };
        version.to_bytes().starts_with(b"1.1.")
    })
}

/// Reads the socket, the unread buffered bytes, the replies owed and the retry time of one
/// server of a handle from libmemcached's private instance struct ([`instance_layout`]).
///
/// `None` when the layout cannot be trusted: the library is not a 1.1.x, or the fields this
/// reads beside the public accessors disagree with them (the port with
/// [`memcached_server_port`], the replies owed with [`memcached_server_response_count`], the
/// owning handle with `memc`). The socket's offset lies between two fields checked this way;
/// `tests/calls.rs` checks it, the buffered bytes and the retry time against a real server.
///
/// # Safety
///
/// `memc` is a live handle used by this thread only and `instance` is NULL or one of its
/// servers (from [`memcached_server_instance_by_position`] or [`memcached_server_by_key`]).
pub unsafe fn memcached_instance_fields(
    memc: *const memcached_st,
    instance: *const memcached_instance_st,
) -> Option<InstanceFields> {
    if instance.is_null() || !instance_layout_known() {
        return None;
    }
    let base = instance.cast::<u8>();
    // SAFETY: instance is a live memcached_instance_st of libmemcached 1.1 (the caller
    // promises it; the version was checked), a struct of over 17,000 bytes whose fields at
    // these offsets are of these types (instance_layout); read_unaligned needs no alignment.
    let (cursor, port, fd, buffered, next_retry, root) = unsafe {
        (
            base.add(instance_layout::CURSOR_ACTIVE)
                .cast::<u32>()
                .read_unaligned(),
            base.add(instance_layout::PORT)
                .cast::<in_port_t>()
                .read_unaligned(),
            base.add(instance_layout::FD)
                .cast::<c_int>()
                .read_unaligned(),
            base.add(instance_layout::READ_BUFFER_LENGTH)
                .cast::<usize>()
                .read_unaligned(),
            base.add(instance_layout::NEXT_RETRY)
                .cast::<time_t>()
                .read_unaligned(),
            base.add(instance_layout::ROOT)
                .cast::<*const memcached_st>()
                .read_unaligned(),
        )
    };
    // SAFETY: instance is a live server of memc; both calls only read it.
    let (public_port, public_cursor) = unsafe {
        (
            memcached_server_port(instance),
            memcached_server_response_count(instance),
        )
    };
    if root != memc || port != public_port || cursor != public_cursor {
        return None;
    }
    Some(InstanceFields {
        fd,
        read_buffer_length: buffered,
        response_count: cursor,
        next_retry,
    })
}

/// `memcached_failed()` from `return.h`.
pub fn memcached_failed(rc: memcached_return_t) -> bool {
    !matches!(
        rc,
        MEMCACHED_AUTH_CONTINUE
            | MEMCACHED_BUFFERED
            | MEMCACHED_DELETED
            | MEMCACHED_END
            | MEMCACHED_ITEM
            | MEMCACHED_STAT
            | MEMCACHED_STORED
            | MEMCACHED_SUCCESS
            | MEMCACHED_VALUE
    )
}

/// `memcached_fatal()` from `return.h`: failures after which libmemcached drops the
/// connection.
pub fn memcached_fatal(rc: memcached_return_t) -> bool {
    !matches!(
        rc,
        MEMCACHED_AUTH_CONTINUE
            | MEMCACHED_BUFFERED
            | MEMCACHED_CLIENT_ERROR
            | MEMCACHED_DATA_EXISTS
            | MEMCACHED_DELETED
            | MEMCACHED_E2BIG
            | MEMCACHED_END
            | MEMCACHED_ITEM
            | MEMCACHED_ERROR
            | MEMCACHED_NOTFOUND
            | MEMCACHED_NOTSTORED
            | MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE
            | MEMCACHED_STAT
            | MEMCACHED_STORED
            | MEMCACHED_SUCCESS
            | MEMCACHED_VALUE
    )
}

/// `memcached_stat_fn`: called by [`memcached_stat_execute`] once per statistic of each
/// server. Use the lengths: the key and value need not be NUL-terminated.
pub type memcached_stat_fn = Option<
    unsafe extern "C" fn(
        server: *const memcached_instance_st,
        key: *const c_char,
        key_length: usize,
        value: *const c_char,
        value_length: usize,
        context: *mut c_void,
    ) -> memcached_return_t,
>;

// ---------------------------------------------------------------------------------------
// Functions

#[link(name = "memcached")]
extern "C" {
    // memcached.h
    /// Initializes `ptr` (or allocates a handle when NULL); returns NULL on failure.
    pub fn memcached_create(ptr: *mut memcached_st) -> *mut memcached_st;
    /// Closes every connection and frees the handle (and its SASL data).
    pub fn memcached_free(ptr: *mut memcached_st);
    /// Copies `source`'s servers, behaviors and SASL data into a new handle (allocated when
    /// `clone` is NULL). No connection is copied or opened.
    pub fn memcached_clone(
        clone: *mut memcached_st,
        source: *const memcached_st,
    ) -> *mut memcached_st;
    /// The number of servers.
    pub fn memcached_server_count(ptr: *const memcached_st) -> u32;
    /// The server at `server_key` (its position in the handle's list), or NULL.
    pub fn memcached_server_instance_by_position(
        ptr: *const memcached_st,
        server_key: u32,
    ) -> *const memcached_instance_st;

    // quit.h
    /// Closes every connection of the handle (sending `quit`).
    pub fn memcached_quit(ptr: *mut memcached_st);

    // behavior.h
    /// Sets a behavior.
    pub fn memcached_behavior_set(
        ptr: *mut memcached_st,
        flag: memcached_behavior_t,
        data: u64,
    ) -> memcached_return_t;
    /// Reads a behavior. Reading `SOCKET_SEND_SIZE`/`SOCKET_RECV_SIZE` while unset connects
    /// to the first server.
    pub fn memcached_behavior_get(ptr: *mut memcached_st, flag: memcached_behavior_t) -> u64;

    // server.h
    /// Adds a TCP server (weight 1). Does not connect or resolve.
    pub fn memcached_server_add(
        ptr: *mut memcached_st,
        hostname: *const c_char,
        port: in_port_t,
    ) -> memcached_return_t;
    /// Removes every server from the handle (closing their connections); its behaviors and
    /// SASL data stay.
    pub fn memcached_servers_reset(ptr: *mut memcached_st);
    /// Adds a TCP server with a ketama weight. Does not connect or resolve.
    pub fn memcached_server_add_with_weight(
        ptr: *mut memcached_st,
        hostname: *const c_char,
        port: in_port_t,
        weight: u32,
    ) -> memcached_return_t;
    /// Adds a unix-domain socket server (port 0) with a ketama weight. Does not connect.
    pub fn memcached_server_add_unix_socket_with_weight(
        ptr: *mut memcached_st,
        filename: *const c_char,
        weight: u32,
    ) -> memcached_return_t;
    /// With `remove_failed`, puts an ejected server that is due back on the handle's ring
    /// (`libmemcached-1.0/hash.h`), as every request does first; no I/O.
    pub fn memcached_autoeject(ptr: *mut memcached_st);
    /// The server `key` maps to (no I/O), or NULL with `*error` set.
    pub fn memcached_server_by_key(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        error: *mut memcached_return_t,
    ) -> *const memcached_instance_st;
    /// The host name of a server, as it was added.
    pub fn memcached_server_name(instance: *const memcached_instance_st) -> *const c_char;
    /// The port of a server.
    pub fn memcached_server_port(instance: *const memcached_instance_st) -> in_port_t;
    /// Replies still expected from a server (non-zero after a fetch means it was cut short).
    pub fn memcached_server_response_count(instance: *const memcached_instance_st) -> u32;
    /// The local port of the server's connection (`getsockname` on its socket); 0 when not
    /// connected.
    pub fn memcached_server_srcport(instance: *const memcached_instance_st) -> in_port_t;
    /// Forgets the server whose connection failed last (it is kept until this is called:
    /// a later success does not clear it).
    pub fn memcached_reset_last_disconnected_server(ptr: *mut memcached_st);
    /// The server whose connection failed last, or NULL.
    pub fn memcached_server_get_last_disconnect(
        ptr: *const memcached_st,
    ) -> *const memcached_instance_st;
    /// The last error message recorded on a server.
    pub fn memcached_server_error(instance: *const memcached_instance_st) -> *const c_char;
    /// The last return code recorded on a server.
    pub fn memcached_server_error_return(
        instance: *const memcached_instance_st,
    ) -> memcached_return_t;

    // server_list.h, parse.h
    /// Parses `"host:port host2:port2:weight ..."` (comma or space separated) into a list;
    /// free it with [`memcached_server_list_free`].
    pub fn memcached_servers_parse(server_strings: *const c_char) -> memcached_server_list_st;
    /// Adds every server of `list` to the handle.
    pub fn memcached_server_push(
        ptr: *mut memcached_st,
        list: memcached_server_list_st,
    ) -> memcached_return_t;
    /// Frees a server list.
    pub fn memcached_server_list_free(list: memcached_server_list_st);

    // get.h, fetch.h
    /// Fetches one value. The returned buffer is `malloc`ed: release it with [`free`].
    /// NULL with `MEMCACHED_NOTFOUND` on a miss.
    pub fn memcached_get(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        value_length: *mut usize,
        flags: *mut u32,
        error: *mut memcached_return_t,
    ) -> *mut c_char;
    /// Sends a multi-get for `number_of_keys` keys; read the items with
    /// [`memcached_fetch_result`] until it returns NULL.
    pub fn memcached_mget(
        ptr: *mut memcached_st,
        keys: *const *const c_char,
        key_length: *const usize,
        number_of_keys: usize,
    ) -> memcached_return_t;
    /// Reads the next item of a multi-get into `result` (or a result it creates when NULL).
    /// Returns NULL at the end, with `*error` `MEMCACHED_END`/`MEMCACHED_NOTFOUND` or an
    /// error; at that point a result that libmemcached allocated is **freed by this call**.
    pub fn memcached_fetch_result(
        ptr: *mut memcached_st,
        result: *mut memcached_result_st,
        error: *mut memcached_return_t,
    ) -> *mut memcached_result_st;

    // result.h
    /// Initializes `result` (caller-owned storage), or allocates one when NULL.
    pub fn memcached_result_create(
        ptr: *const memcached_st,
        result: *mut memcached_result_st,
    ) -> *mut memcached_result_st;
    /// Frees the value buffer, and the struct itself when libmemcached allocated it.
    pub fn memcached_result_free(result: *mut memcached_result_st);
    /// The key of a fetched item (use the length; it need not be NUL-terminated).
    pub fn memcached_result_key_value(result: *const memcached_result_st) -> *const c_char;
    /// The length of the key.
    pub fn memcached_result_key_length(result: *const memcached_result_st) -> usize;
    /// The value bytes (may be NULL when empty).
    pub fn memcached_result_value(result: *const memcached_result_st) -> *const c_char;
    /// The length of the value.
    pub fn memcached_result_length(result: *const memcached_result_st) -> usize;
    /// The client flags.
    pub fn memcached_result_flags(result: *const memcached_result_st) -> u32;
    /// The CAS unique (0 when not fetched).
    pub fn memcached_result_cas(result: *const memcached_result_st) -> u64;

    // storage.h
    /// `set`.
    pub fn memcached_set(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        value: *const c_char,
        value_length: usize,
        expiration: time_t,
        flags: u32,
    ) -> memcached_return_t;
    /// `add`.
    pub fn memcached_add(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        value: *const c_char,
        value_length: usize,
        expiration: time_t,
        flags: u32,
    ) -> memcached_return_t;
    /// `replace`.
    pub fn memcached_replace(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        value: *const c_char,
        value_length: usize,
        expiration: time_t,
        flags: u32,
    ) -> memcached_return_t;
    /// `append`.
    pub fn memcached_append(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        value: *const c_char,
        value_length: usize,
        expiration: time_t,
        flags: u32,
    ) -> memcached_return_t;
    /// `prepend`.
    pub fn memcached_prepend(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        value: *const c_char,
        value_length: usize,
        expiration: time_t,
        flags: u32,
    ) -> memcached_return_t;
    /// `cas`.
    pub fn memcached_cas(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        value: *const c_char,
        value_length: usize,
        expiration: time_t,
        flags: u32,
        cas: u64,
    ) -> memcached_return_t;

    // delete.h, touch.h, flush.h
    /// `delete`.
    pub fn memcached_delete(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        expiration: time_t,
    ) -> memcached_return_t;
    /// `delete`, placed by `group_key` (pass the key itself to place it as
    /// [`memcached_delete`] does).
    pub fn memcached_delete_by_key(
        ptr: *mut memcached_st,
        group_key: *const c_char,
        group_key_length: usize,
        key: *const c_char,
        key_length: usize,
        expiration: time_t,
    ) -> memcached_return_t;
    /// `touch`.
    pub fn memcached_touch(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        expiration: time_t,
    ) -> memcached_return_t;
    /// `flush_all` on every server.
    pub fn memcached_flush(ptr: *mut memcached_st, expiration: time_t) -> memcached_return_t;

    // auto.h
    /// `incr` by a 32-bit offset (see [`memcached_increment_by_key`] for 64 bits).
    pub fn memcached_increment(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        offset: u32,
        value: *mut u64,
    ) -> memcached_return_t;
    /// `decr` by a 32-bit offset (see [`memcached_decrement_by_key`] for 64 bits).
    pub fn memcached_decrement(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        offset: u32,
        value: *mut u64,
    ) -> memcached_return_t;
    /// `incr` by a 64-bit offset, placed by `group_key` (pass the key itself to place it as
    /// [`memcached_increment`] does).
    pub fn memcached_increment_by_key(
        ptr: *mut memcached_st,
        group_key: *const c_char,
        group_key_length: usize,
        key: *const c_char,
        key_length: usize,
        offset: u64,
        value: *mut u64,
    ) -> memcached_return_t;
    /// `decr` by a 64-bit offset, placed by `group_key`.
    pub fn memcached_decrement_by_key(
        ptr: *mut memcached_st,
        group_key: *const c_char,
        group_key_length: usize,
        key: *const c_char,
        key_length: usize,
        offset: u64,
        value: *mut u64,
    ) -> memcached_return_t;
    /// `incr`, creating the item with `initial` when missing (binary protocol only).
    pub fn memcached_increment_with_initial(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        offset: u64,
        initial: u64,
        expiration: time_t,
        value: *mut u64,
    ) -> memcached_return_t;
    /// `decr`, creating the item with `initial` when missing (binary protocol only).
    pub fn memcached_decrement_with_initial(
        ptr: *mut memcached_st,
        key: *const c_char,
        key_length: usize,
        offset: u64,
        initial: u64,
        expiration: time_t,
        value: *mut u64,
    ) -> memcached_return_t;

    // stats.h
    /// `stats` of every server, parsed into an array of [`memcached_stat_st`] (one per
    /// server); free it with [`memcached_stat_free`].
    pub fn memcached_stat(
        ptr: *mut memcached_st,
        args: *mut c_char,
        error: *mut memcached_return_t,
    ) -> *mut memcached_stat_st;
    /// The statistic names [`memcached_stat_get_value`] knows: a `malloc`ed, NULL-terminated
    /// array of static strings; release the array (not the strings) with [`free`].
    pub fn memcached_stat_get_keys(
        ptr: *mut memcached_st,
        stat: *mut memcached_stat_st,
        error: *mut memcached_return_t,
    ) -> *mut *mut c_char;
    /// One statistic as text; a `malloc`ed string, release it with [`free`]. NULL with
    /// `MEMCACHED_INVALID_ARGUMENTS` for a name it does not know.
    pub fn memcached_stat_get_value(
        ptr: *const memcached_st,
        stat: *mut memcached_stat_st,
        key: *const c_char,
        error: *mut memcached_return_t,
    ) -> *mut c_char;
    /// Frees what [`memcached_stat`] returned.
    pub fn memcached_stat_free(ptr: *const memcached_st, stat: *mut memcached_stat_st);
    /// Runs `stats ARGS` on every server and calls `func` for every statistic, unparsed.
    /// Servers that fail are skipped (their error is recorded on the server).
    pub fn memcached_stat_execute(
        ptr: *mut memcached_st,
        args: *const c_char,
        func: memcached_stat_fn,
        context: *mut c_void,
    ) -> memcached_return_t;

    // version.h
    /// Asks every server for its version.
    pub fn memcached_version(ptr: *mut memcached_st) -> memcached_return_t;
    /// The library's version, e.g. `"1.1.4"`.
    pub fn memcached_lib_version() -> *const c_char;

    // strerror.h, error.h
    /// A static description of a return code.
    pub fn memcached_strerror(ptr: *const memcached_st, rc: memcached_return_t) -> *const c_char;
    /// The message of the last error on the handle (with libmemcached's details), owned by
    /// the handle.
    pub fn memcached_last_error_message(ptr: *const memcached_st) -> *const c_char;
    /// The return code of the last error on the handle.
    pub fn memcached_last_error(ptr: *const memcached_st) -> memcached_return_t;
    /// The `errno` of the last error on the handle, or 0.
    pub fn memcached_last_error_errno(ptr: *const memcached_st) -> c_int;

    // sasl.h
    /// Sets SASL PLAIN credentials (binary protocol only); libmemcached copies them.
    pub fn memcached_set_sasl_auth_data(
        ptr: *mut memcached_st,
        username: *const c_char,
        password: *const c_char,
    ) -> memcached_return_t;
    /// Frees the credentials set by [`memcached_set_sasl_auth_data`] ([`memcached_free`]
    /// also does).
    pub fn memcached_destroy_sasl_auth_data(ptr: *mut memcached_st) -> memcached_return_t;
}

//! The facade's typed errors.

use newcache_keyfn::InvalidKey;

/// Everything a [`crate::Cache`] operation can fail with. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key function made a key memcached cannot take; nothing was sent.
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    /// `incr`/`decr` or `incr_version`/`decr_version` on a key that holds no value.
    #[error("cache key {key:?} holds no value (incr/decr need an existing counter: create it first, e.g. with add or set with herd off; incr_version/decr_version move a value, and there is none)")]
    NotFound {
        /// The caller's key.
        key: String,
    },
    /// `incr`/`decr` on a value that is not a decimal counter.
    #[error("cache key {key:?} does not hold a counter memcached can change: incr/decr need an unsigned decimal integer (0 to 2^64-1, not negative), as set stores an unsigned integer value")]
    NotNumeric {
        /// The caller's key.
        key: String,
    },
    /// A [`cas`](crate::Cache::cas) found the value changed, or gone, since the
    /// [`gets`](crate::Cache::gets) that gave its token; nothing was stored.
    #[error("the value of cache key {key:?} changed or was deleted since gets read it; nothing was stored: read it again with gets and retry")]
    CasConflict {
        /// The caller's key.
        key: String,
    },
    /// A `get_or_set` of a key with no value waited for another call's loader of the same
    /// key in this process (one loader per key at a time), and that loader returned an
    /// error, or its value could not be stored (too large): this call ran no loader of its own, so a failing backend is not called once
    /// more per waiting caller, each after the one before it failed.
    #[error("get_or_set of cache key {key:?} waited for another caller's loader of that key in this process, and it failed, or its value could not be stored (that caller got the error); this call ran no loader of its own: retry it, or report the failure")]
    LoadFailed {
        /// The caller's key.
        key: String,
    },
    /// A `get_or_set` (or `get_or_try_set`) called from inside the loader of that same key,
    /// on this cache or another of the same name on the same servers (they share single
    /// flights), where it would wait for a load of that key under way in this process (the
    /// key cold: the very load it runs in), for ever. Nothing more was sent for it; the
    /// outer load goes on.
    #[error("get_or_set of cache key {key:?} was called from inside that key's own get_or_set loader, where it would wait for that load for ever: compute the value in the loader instead of reading it through the cache")]
    Reentrant {
        /// The caller's key.
        key: String,
    },
    /// `append`/`prepend` on a cache whose values are not bytes to extend; nothing was sent.
    #[error("cannot append to or prepend to cache key {key:?}: {reason}")]
    NotAppendable {
        /// The caller's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The value could not be encoded; nothing was sent.
    #[error("cannot encode the value for cache key {key:?}: {detail}")]
    Encode {
        /// The caller's key.
        key: String,
        /// What the codec said.
        detail: String,
    },
    /// The stored value could not be read as the type asked for.
    #[error("cannot read the value of cache key {key:?} (flags {flags:#x}): {detail}")]
    Decode {
        /// The caller's key.
        key: String,
        /// The flags the value was read by: the item's, less the herd state newcache keeps
        /// in them when `HERD_FLAG` (bit 8) is set (that bit and the soft expiry in bits 11
        /// and up), so the value's own type and codec bits. An item stored with every flag
        /// set reads as `0x6ff`.
        flags: u32,
        /// What the codec said.
        detail: String,
    },
    /// A TTL memcached cannot keep (past 2038); nothing was sent.
    #[error(transparent)]
    TtlTooLong(#[from] newcache_herd::TtlTooLong),
    /// The server or the connection failed.
    #[error(transparent)]
    Transport(#[from] newcache_transport::Error),
    /// A `set_many` some of whose servers failed while the others answered, or some of
    /// whose values were refused as too large: the servers that answered stored their items
    /// (all but `not_stored`), each key of a failed server is in `failed` with its server's
    /// failure (it may or may not have been stored), and so is each value refused as too
    /// large (with its [`newcache_transport::Error::ValueTooLarge`]; never sent, and its
    /// key's old value deleted where its server answered). pylibmc's
    /// `set_multi` raises here with no word of which keys were written.
    #[error("set_many: {} of the keys may not have been written ({}); every other key was written: write these again, or read back what matters", .failed.len(), failures(.failed))]
    PartlyStored {
        /// The keys of the servers that failed and of the values too large, in the order
        /// given, each with its error.
        failed: Vec<(String, newcache_transport::Error)>,
        /// The keys the servers that answered did not store.
        not_stored: Vec<String>,
    },
    /// A `delete_many` some of whose servers failed while the others answered: those
    /// deleted their keys (`existed` of them held a value), and each key of a failed server
    /// is in `failed` with its server's failure (it may or may not have been deleted).
    /// pylibmc's `delete_multi` raises here with no word of which keys were deleted.
    #[error("delete_many: {} of the keys may not have been deleted ({}); every other key was deleted ({existed} of them held a value): delete these again", .failed.len(), failures(.failed))]
    PartlyDeleted {
        /// The keys of the servers that failed, in the order given, each with its error.
        failed: Vec<(String, newcache_transport::Error)>,
        /// How many of the keys the servers that answered deleted held a value.
        existed: usize,
    },
    /// The configuration (URL or builder) is invalid.
    #[error("invalid newcache configuration: {0}")]
    Config(String),
}

impl Error {
    /// This error naming the caller's `key` where it named the wire key (a stored herd
    /// state that cannot be read is found where only the wire key is known).
    pub(crate) fn of_key(self, key: &str) -> Error {
        match self {
            Error::Decode { flags, detail, .. } => Error::Decode {
                key: key.to_owned(),
                flags,
                detail,
            },
            other => other,
        }
    }
}

/// Result type of every cache operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The failures of a [`Error::PartlyStored`] or [`Error::PartlyDeleted`], for its message: each server's first (or a
/// value too large), once each.
fn failures(failed: &[(String, newcache_transport::Error)]) -> String {
    /// The most failures named; the others are counted.
    const NAMED: usize = 3;
    let mut seen: Vec<String> = Vec::new();
    for (_, e) in failed {
        let text = e.to_string();
        if !seen.contains(&text) {
            seen.push(text);
        }
    }
    let more = seen.len().saturating_sub(NAMED);
    seen.truncate(NAMED);
    let named = seen.join("; ");
    match more {
        0 => named,
        n => format!("{named}; and {n} more"),
    }
}

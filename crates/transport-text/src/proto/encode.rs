//! Requests: each command appended to the caller's buffer, ready to write.

use newcache_transport::StoreMode;

/// Appends `prefix`, then `n` in decimal. With `itoa`: through `core::fmt` (`write!`) a
/// number cost about as many instructions as the rest of a get's request.
pub(crate) fn number(out: &mut Vec<u8>, prefix: &[u8], n: impl itoa::Integer) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `get`/`gets` for these keys (`gets` when `cas` is true).
pub fn encode_get(out: &mut Vec<u8>, keys: &[&[u8]], cas: bool) {
    out.extend_from_slice(if cas { b"gets" } else { b"get" });
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a storage command: `set|add|replace|append|prepend <key> <flags> <exptime> <bytes>`
/// (`cas ... <unique>`), an optional `noreply`, and the data block.
pub fn encode_store(
    out: &mut Vec<u8>,
    mode: StoreMode,
    key: &[u8],
    value: &[u8],
    flags: u32,
    exptime: u32,
    noreply: bool,
) {
    out.reserve(key.len() + value.len() + 64);
    out.extend_from_slice(mode.command().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    number(out, b" ", flags);
    number(out, b" ", exptime);
    number(out, b" ", value.len());
    if let StoreMode::Cas(unique) = mode {
        number(out, b" ", unique);
    }
    if noreply {
        out.extend_from_slice(b" noreply");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `delete <key>`.
pub fn encode_delete(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"delete ");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
}

/// Appends `delete <key> noreply`: memcached sends no reply to it (not even an error).
pub fn encode_delete_noreply(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"delete ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" noreply\r\n");
}

/// Appends `incr <key> <delta>` (or `decr`).
pub fn encode_arith(out: &mut Vec<u8>, incr: bool, key: &[u8], delta: u64) {
    out.extend_from_slice(if incr { b"incr " } else { b"decr " });
    out.extend_from_slice(key);
    number(out, b" ", delta);
    out.extend_from_slice(b"\r\n");
}

/// Appends `touch <key> <exptime>`.
pub fn encode_touch(out: &mut Vec<u8>, key: &[u8], exptime: u32) {
    out.extend_from_slice(b"touch ");
    out.extend_from_slice(key);
    number(out, b" ", exptime);
    out.extend_from_slice(b"\r\n");
}

/// Appends a meta get returning value, flags, CAS and TTL, with recache (win) below
/// `recache_below` seconds of TTL: `mg <key> v f c t R<n>`.
pub fn encode_meta_get(out: &mut Vec<u8>, key: &[u8], recache_below: u32) {
    out.extend_from_slice(b"mg ");
    out.extend_from_slice(key);
    number(out, b" v f c t R", recache_below);
    out.extend_from_slice(b"\r\n");
}

/// Appends a meta delete that marks the item stale for `grace` seconds: `md <key> I T<grace>`.
pub fn encode_meta_invalidate(out: &mut Vec<u8>, key: &[u8], grace: u32) {
    out.extend_from_slice(b"md ");
    out.extend_from_slice(key);
    number(out, b" I T", grace);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bare command line such as `flush_all`, `stats` or `version`, padded with
/// spaces to [`BINARY_HEADER`] bytes: memcached ignores spaces after a command, and a
/// memcached that takes only the binary protocol (`-B binary`, or `-S` for SASL) waits for
/// a whole binary header before it closes the connection, so a shorter line was left
/// unanswered until the read timeout ("overloaded or hung", an outside audit), where the
/// padded one is refused at once and the server can be named for what it is.
pub fn encode_line(out: &mut Vec<u8>, command: &str) {
    out.extend_from_slice(command.as_bytes());
    let padding = BINARY_HEADER.saturating_sub(command.len() + 2);
    out.resize(out.len() + padding, b' ');
    out.extend_from_slice(b"\r\n");
}

/// The size of a binary protocol request header, which a binary-only memcached reads whole
/// before it answers or closes.
pub const BINARY_HEADER: usize = 24;

//! Copies of the C strings and byte buffers libmemcached owns.

use std::ffi::CStr;
use std::os::raw::c_char;

/// Copies a C string libmemcached owns.
///
/// # Safety
///
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn c_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL and NUL-terminated, as the caller promises.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Borrows `len` bytes libmemcached owns.
///
/// # Safety
///
/// `p` is NULL (then `len` is ignored) or points to `len` readable bytes that stay valid
/// and unchanged for `'a`.
pub(crate) unsafe fn c_slice<'a>(p: *const c_char, len: usize) -> &'a [u8] {
    if p.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: p points to len readable bytes that live for 'a, as the caller promises.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

/// Copies `len` bytes libmemcached owns.
///
/// # Safety
///
/// `p` is NULL (then `len` is ignored) or points to `len` readable bytes.
pub(crate) unsafe fn c_bytes(p: *const c_char, len: usize) -> Vec<u8> {
    if p.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: p points to len readable bytes, as the caller promises.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec()
}

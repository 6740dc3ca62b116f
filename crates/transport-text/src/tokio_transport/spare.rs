//! Each thread's spare request buffer: a lone request written whole on the direct path
//! gives its buffer back here, and the thread's next request is encoded into it, so a
//! lone get allocates no buffer for its request.

use std::cell::Cell;

thread_local! {
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The largest buffer kept: a thread that once wrote a large value does not hold its
/// buffer for good.
const LIMIT: usize = 4096;

/// The thread's spare buffer (empty), or a new one.
pub(super) fn take() -> Vec<u8> {
    SPARE.try_with(Cell::take).unwrap_or_default()
}

/// Keeps `bytes`, written and done with, for the thread's next request.
pub(super) fn give_back(mut bytes: Vec<u8>) {
    if bytes.capacity() > LIMIT {
        return;
    }
    bytes.clear();
    // A thread being torn down has no slot any more: the buffer is freed.
    let _ = SPARE.try_with(|spare| spare.set(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty_and_a_large_one_is_not_kept() {
        let mut bytes = take();
        bytes.extend_from_slice(b"mg k v f c k O1\r\n");
        let at = bytes.as_ptr();
        give_back(bytes);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at);
        assert!(take().capacity() == 0, "taken twice");
        give_back(Vec::with_capacity(LIMIT + 1));
        assert_eq!(take().capacity(), 0);
    }
}

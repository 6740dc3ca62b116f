//! [`ShortKey`]: a key owned without an allocation when it is short.

use std::fmt;
use std::ops::Deref;

/// The most bytes a [`ShortKey`] holds inline: newcache's hashed keys are 43 bytes with an
/// empty flavor, and most keys are shorter than this.
pub const SHORT_KEY_INLINE: usize = 62;

/// A key owned by a request that outlives its caller's borrow (an async call's future, a
/// queued command awaiting its reply): inline up to [`SHORT_KEY_INLINE`] bytes, so that
/// holding one allocates nothing, and on the heap when longer.
///
/// ```
/// use newcache_transport::ShortKey;
///
/// let key = ShortKey::new(b"user:42");
/// assert_eq!(&*key, b"user:42");
/// assert_eq!(&*ShortKey::new(&[b'k'; 200]), &[b'k'; 200][..]);
/// ```
#[derive(Clone)]
pub struct ShortKey(Held);

#[derive(Clone)]
enum Held {
    Inline {
        len: u8,
        bytes: [u8; SHORT_KEY_INLINE],
    },
    Heap(Box<[u8]>),
}

impl ShortKey {
    /// A copy of `key`.
    pub fn new(key: &[u8]) -> ShortKey {
        let mut bytes = [0u8; SHORT_KEY_INLINE];
        ShortKey(
            match (u8::try_from(key.len()), bytes.get_mut(..key.len())) {
                (Ok(len), Some(room)) => {
                    room.copy_from_slice(key);
                    Held::Inline { len, bytes }
                }
                _ => Held::Heap(key.into()),
            },
        )
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Held::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Held::Heap(key) => key,
        }
    }
}

impl Deref for ShortKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for ShortKey {
    fn eq(&self, other: &ShortKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ShortKey {}

impl fmt::Debug for ShortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_whole_inline_or_not() {
        for len in [0, 1, 43, SHORT_KEY_INLINE, SHORT_KEY_INLINE + 1, 250, 300] {
            let key: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let held = ShortKey::new(&key);
            assert_eq!(held.as_bytes(), &key[..], "{len}");
            assert_eq!(
                matches!(held.0, Held::Inline { .. }),
                len <= SHORT_KEY_INLINE,
                "{len}"
            );
            assert_eq!(held.clone(), held);
        }
        assert_ne!(ShortKey::new(b"ab"), ShortKey::new(b"abc"));
        assert!(std::mem::size_of::<ShortKey>() <= SHORT_KEY_INLINE + 2);
    }
}

//! A server's own item size limit, asked of it and kept a while ([`ItemSizeMax`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A server's `item_size_max` (memcached's `-I`, from `stats settings`), as it last said
/// it: what a meta-protocol transport checks a [`Store::needs_server_limit`] request
/// against before sending it, so that a request the server would refuse (and unlink the
/// key's old item for) is refused here instead, with nothing sent.
///
/// An answer is kept for [`ItemSizeMax::KEEP`], then asked again (a server restarted with
/// another `-I`), and learnt again whenever the server refuses a value as too large.
///
/// [`Store::needs_server_limit`]: crate::Store::needs_server_limit
///
/// ```
/// use newcache_transport::ItemSizeMax;
/// let max = ItemSizeMax::default();
/// assert_eq!(max.known(), None); // to be asked
/// max.learn(Some(512 * 1024));
/// assert_eq!(max.known(), Some(Some(524_288)));
/// max.learn(None); // the server did not say
/// assert_eq!(max.known(), Some(None));
/// ```
#[derive(Debug, Default)]
pub struct ItemSizeMax {
    said: Mutex<Option<(Instant, Option<usize>)>>,
}

impl ItemSizeMax {
    /// How long an answer is kept.
    pub const KEEP: Duration = Duration::from_secs(60);

    /// The server's answer, when it was asked within [`ItemSizeMax::KEEP`]: its limit, or
    /// `None` when it did not say (a server without `stats settings`). `None`: ask it.
    pub fn known(&self) -> Option<Option<usize>> {
        let said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        match *said {
            Some((at, max)) if at.elapsed() < Self::KEEP => Some(max),
            _ => None,
        }
    }

    /// Keeps the server's answer (`None`: it did not say).
    pub fn learn(&self, max: Option<usize>) {
        *self.said.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), max));
    }
}

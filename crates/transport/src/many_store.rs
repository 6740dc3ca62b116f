//! What a batch of stores did when some of its servers failed: the statuses of the
//! requests the servers answered, and the requests whose server did not, each with the
//! failure.

use crate::{Error, StoreStatus};

/// A batch of stores' answer, request by request
/// ([`Transport::store_many_each`](crate::Transport::store_many_each)): each request's
/// status, and the requests whose server failed while the others answered, with that
/// failure. Their entries in `statuses` are [`StoreStatus::NotStored`], but nothing is known
/// of them: each may or may not have been stored.
///
/// ```
/// use newcache_transport::{Error, ManyStore, StoreStatus};
/// use std::time::Duration;
///
/// let hung = Error::Timeout { server: "10.0.0.2:11211".into(), after: Duration::from_millis(500) };
/// let stored = ManyStore::with_failed(vec![StoreStatus::Stored, StoreStatus::NotStored], vec![(1, hung)]);
/// assert!(stored.statuses[0].is_stored());
/// assert!(matches!(stored.failed[0], (1, Error::Timeout { .. })));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct ManyStore {
    /// One status per request, in the order given.
    pub statuses: Vec<StoreStatus>,
    /// The requests (their positions, in order) not answered because their server failed,
    /// each with the failure.
    pub failed: Vec<(usize, Error)>,
}

impl ManyStore {
    /// Every request answered: `statuses` is the whole answer.
    pub fn all(statuses: Vec<StoreStatus>) -> Self {
        ManyStore {
            statuses,
            failed: Vec::new(),
        }
    }

    /// `statuses`, with the requests in `failed` not answered.
    pub fn with_failed(statuses: Vec<StoreStatus>, mut failed: Vec<(usize, Error)>) -> Self {
        failed.sort_by_key(|(i, _)| *i);
        ManyStore { statuses, failed }
    }

    /// [`Transport::store_many`](crate::Transport::store_many)'s answer, from a batch that
    /// ran to its end: the first failure (by request order), else `refused` (the first
    /// request refused as too large), else the statuses.
    pub fn into_statuses(self, refused: Option<Error>) -> Result<Vec<StoreStatus>, Error> {
        match (self.failed.into_iter().next(), refused) {
            (Some((_, e)), _) | (None, Some(e)) => Err(e),
            (None, None) => Ok(self.statuses),
        }
    }
}

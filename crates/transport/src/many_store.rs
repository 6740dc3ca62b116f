//! What a batch of stores or deletes did when some of its servers failed: the answers of
//! the requests the servers answered, and the requests whose server did not, each with the
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
    /// each with the failure, and (from `store_many_each`) the requests refused as too large,
    /// each with its [`Error::ValueTooLarge`].
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
    /// ran to its end and the requests it refused as too large: the first server failure
    /// (by request order), else the first refusal, else the statuses.
    pub fn into_statuses(self, refused: Vec<(usize, Error)>) -> Result<Vec<StoreStatus>, Error> {
        let first_refused = refused.into_iter().min_by_key(|(i, _)| *i);
        match (self.failed.into_iter().next(), first_refused) {
            (Some((_, e)), _) | (None, Some((_, e))) => Err(e),
            (None, None) => Ok(self.statuses),
        }
    }

    /// [`Transport::store_many_each`](crate::Transport::store_many_each)'s answer: the
    /// requests refused as too large (each with its [`Error::ValueTooLarge`]) listed in
    /// `failed` with those of the failed servers, in request order (a request in both is
    /// listed once, as refused: it was never sent).
    pub fn with_refused(mut self, refused: Vec<(usize, Error)>) -> Self {
        let mut failed = refused;
        failed.append(&mut self.failed);
        failed.sort_by_key(|(i, _)| *i);
        failed.dedup_by_key(|(i, _)| *i);
        self.failed = failed;
        self
    }
}

/// A batch of deletes' answer, key by key
/// ([`Transport::delete_many_each`](crate::Transport::delete_many_each)): whether each key
/// held an item, and the keys whose server failed while the others answered, with that
/// failure. Their entries in `deleted` are `false`, but nothing is known of them: each may
/// or may not have been deleted.
///
/// ```
/// use newcache_transport::{Error, ManyDelete};
/// use std::time::Duration;
///
/// let hung = Error::Timeout { server: "10.0.0.2:11211".into(), after: Duration::from_millis(500) };
/// let deleted = ManyDelete::with_failed(vec![true, false], vec![(1, hung)]);
/// assert_eq!(deleted.existed(), 1);
/// assert!(matches!(deleted.failed[0], (1, Error::Timeout { .. })));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct ManyDelete {
    /// One entry per key, in the order given: whether it held an item.
    pub deleted: Vec<bool>,
    /// The keys (their positions, in order) not answered because their server failed, each
    /// with the failure.
    pub failed: Vec<(usize, Error)>,
}

impl ManyDelete {
    /// Every key answered: `deleted` is the whole answer.
    pub fn all(deleted: Vec<bool>) -> Self {
        ManyDelete {
            deleted,
            failed: Vec::new(),
        }
    }

    /// `deleted`, with the keys in `failed` not answered.
    pub fn with_failed(deleted: Vec<bool>, mut failed: Vec<(usize, Error)>) -> Self {
        failed.sort_by_key(|(i, _)| *i);
        ManyDelete { deleted, failed }
    }

    /// How many of the answered keys held an item.
    pub fn existed(&self) -> usize {
        self.deleted.iter().filter(|d| **d).count()
    }

    /// [`Transport::delete_many`](crate::Transport::delete_many)'s answer: the first failed
    /// key's error (in key order), else one entry per key.
    pub fn into_deleted(self) -> Result<Vec<bool>, Error> {
        match self.failed.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(self.deleted),
        }
    }
}

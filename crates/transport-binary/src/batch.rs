//! [`Batch`]: how a `store_many` or `delete_many` answers, from the outcomes of its
//! requests, by the text transport's rules.

use newcache_transport::{Error, ManyDelete, ManyStore, Result, StoreStatus};

use crate::BinaryTransport;

/// The outcome of a batch of per-key requests (`store_many`, `delete_many`) sent one after
/// another: the text transport's rules, so both transports answer a batch alike.
pub(crate) struct Batch {
    /// Per configured server: the first request of the batch that went to it (the order of
    /// the text transport's per-server groups) and, once it failed or was down, its error.
    servers: Vec<(Option<usize>, Option<Error>)>,
    /// The first error that is not a server failure, by (server order, request order).
    other: Option<((usize, usize), Error)>,
    /// The requests refused as too large, in request order.
    refused: Vec<(usize, Error)>,
    /// The requests not answered because their server failed or was down, and the server.
    unanswered: Vec<(usize, usize)>,
}

impl Batch {
    pub(crate) fn new(servers: usize) -> Batch {
        Batch {
            servers: (0..servers).map(|_| (None, None)).collect(),
            other: None,
            refused: Vec::new(),
            unanswered: Vec::new(),
        }
    }

    /// Whether request `i`, for `server`, is to be sent: not when the server already failed
    /// in this batch, or is left alone (that is then its failure).
    pub(crate) fn may_send(
        &mut self,
        t: &BinaryTransport,
        server: Option<usize>,
        i: usize,
    ) -> bool {
        let Some(slot) = server.and_then(|s| self.servers.get_mut(s)) else {
            return true;
        };
        slot.0.get_or_insert(i);
        let sent = slot.1.is_none()
            && match server.map(|s| t.gate(s)) {
                Some(Err(e)) => {
                    slot.1 = Some(e);
                    false
                }
                _ => true,
            };
        if let (false, Some(s)) = (sent, server) {
            self.unanswered.push((i, s));
        }
        sent
    }

    /// Request `i`, for `server`, failed with `e`.
    pub(crate) fn failed(&mut self, server: Option<usize>, i: usize, e: Error) {
        let slot = server.and_then(|s| self.servers.get_mut(s));
        match slot {
            Some(slot) if e.is_server_failure() => {
                slot.1.get_or_insert(e);
                if let Some(s) = server {
                    self.unanswered.push((i, s));
                }
            }
            slot => {
                let rank = (slot.and_then(|s| s.0).unwrap_or(i), i);
                if self.other.as_ref().is_none_or(|(r, _)| rank < *r) {
                    self.other = Some((rank, e));
                }
            }
        }
    }

    pub(crate) fn answer<T>(self, results: Vec<T>) -> Result<Vec<T>> {
        if let Some(e) = first_failed(self.servers) {
            return Err(e);
        }
        if let Some((_, e)) = self.other {
            return Err(e);
        }
        if let Some((_, e)) = self.refused.into_iter().next() {
            return Err(e);
        }
        Ok(results)
    }

    /// A `store_many_each`'s answer: the statuses, with the requests of the servers that
    /// failed and those refused as too large told apart, when any server answered; else
    /// the first failed server's error. An error that is not a server failure is the
    /// answer before either.
    pub(crate) fn answer_each(self, statuses: Vec<StoreStatus>) -> Result<ManyStore> {
        let (failed, refused) = self.each()?;
        Ok(ManyStore::with_failed(statuses, failed).with_refused(refused))
    }

    /// A `delete_many_each`'s answer, by the rules of [`Self::answer_each`].
    pub(crate) fn answer_deletes(self, deleted: Vec<bool>) -> Result<ManyDelete> {
        let (failed, _) = self.each()?;
        Ok(ManyDelete::with_failed(deleted, failed))
    }

    /// The requests of the failed servers, each with its server's failure (none when no
    /// server answered and none failed), and those refused as too large; an error when no
    /// server answered and one failed, or when a request met an error that is not a
    /// server failure.
    #[allow(clippy::type_complexity)]
    fn each(self) -> Result<(Vec<(usize, Error)>, Vec<(usize, Error)>)> {
        if let Some((_, e)) = self.other {
            return Err(e);
        }
        let answered = self
            .servers
            .iter()
            .any(|(first, e)| first.is_some() && e.is_none());
        if !answered {
            return match first_failed(self.servers) {
                Some(e) => Err(e),
                None => Ok((Vec::new(), self.refused)),
            };
        }
        let failed = self
            .unanswered
            .iter()
            .filter_map(|&(i, s)| {
                let (_, e) = self.servers.get(s)?;
                Some((i, e.as_ref()?.for_another_key()))
            })
            .collect();
        Ok((failed, self.refused))
    }

    /// Request `i` was refused as too large (by the limit or by the server).
    pub(crate) fn refuse(&mut self, i: usize, e: Error) {
        self.refused.push((i, e));
    }
}

/// The error of the failed server (per configured server: its first request in the batch,
/// and its failure) whose first request came first.
fn first_failed(servers: Vec<(Option<usize>, Option<Error>)>) -> Option<Error> {
    servers
        .into_iter()
        .filter_map(|(first, e)| Some((first?, e?)))
        .min_by_key(|(first, _)| *first)
        .map(|(_, e)| e)
}

//! A server's part of a batch too large for one job: sent in rounds, as the blocking
//! transport sends it ([`RoundLimit`]), each round one job, sent once the round before it
//! is answered, its reply due within the read timeout.
//!
//! As one job, a large multi-get's whole reply had one read timeout: a `get_many` of
//! 100,000 values of 1 KB failed at a 500 ms timeout while its reply streamed in, where the
//! blocking transport, a read timeout per round, answered it (an outside audit). The rounds
//! go one after another, not several queued at once: queued rounds could take different
//! connections (a classic one carries one request at a time; meta ones are taken in turn),
//! where memcached runs them on different threads, so a later `set` of a key in one round
//! could land before an earlier one in the round before (a review: the earlier value won 6
//! to 76 times in 300), a later round's new connection waited out the connect timeout
//! before the first round's read timeout came, and a round waiting for room in the queue
//! gave up before the hung server ahead of it was reported.

use std::ops::Range;

use newcache_transport::Result;

use super::{Answers, Build, TokioTextTransport};
use crate::batch::{Batch, RoundLimit};
use crate::command::Wire;

/// The rounds `members` go out in, as ranges of `members`: each as many as `limit` lets
/// one round carry, at least one. One range covering all of them when they fit one round.
pub(super) fn rounds(members: &[usize], batch: Batch<'_>, limit: RoundLimit) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(1);
    let mut start = 0;
    while start < members.len() {
        let end = limit.chunk_end(members, start, &|i| batch.cost(i), &|i| {
            batch
                .reply_cost(i, Wire::Meta)
                .max(batch.reply_cost(i, Wire::Classic))
        });
        out.push(start..end.max(start + 1));
        start = end.max(start + 1);
    }
    out
}

impl TokioTextTransport {
    /// Server `index`'s part of a batch in rounds, each built by one of `rounds` (in order):
    /// every round's answers, in order, as one list. Each round is queued once the round
    /// before it is answered, and is due within the read timeout; a round that fails fails
    /// the part.
    pub(super) async fn in_rounds(
        &self,
        index: usize,
        rounds: &[(usize, Box<Build<'_>>)],
    ) -> Result<Answers> {
        super::in_runtime()?;
        let mut all: Option<Answers> = None;
        for (_, build) in rounds {
            let sub = self.submit(index, build.as_ref()).await?;
            let answers = self.wait(sub, build.as_ref()).await?;
            match &mut all {
                Some(all) => all.list.extend(answers.list),
                None => all = Some(answers),
            }
        }
        Ok(all.unwrap_or(Answers {
            wire: Wire::Classic,
            list: Default::default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::KEY_OVERHEAD;

    #[test]
    fn members_that_fit_one_round_are_one_range_and_more_are_split_in_order() {
        let key = [b'k'; 100];
        let keys: Vec<&[u8]> = vec![&key[..]; 1000];
        let members: Vec<usize> = (0..keys.len()).collect();
        let few = rounds(
            members.get(..10).unwrap(),
            Batch::Gets(&keys),
            RoundLimit::VALUES,
        );
        assert_eq!(few, vec![0..10]);
        let all = rounds(&members, Batch::Gets(&keys), RoundLimit::VALUES);
        let per_round = 32 * 1024 / (100 + KEY_OVERHEAD);
        assert_eq!(all.first(), Some(&(0..per_round)));
        assert_eq!(all.len(), 1000usize.div_ceil(per_round));
        let mut next = 0;
        for r in &all {
            assert_eq!(r.start, next);
            assert!(r.end > r.start);
            next = r.end;
        }
        assert_eq!(next, 1000);
        assert!(rounds(&[], Batch::Gets(&keys), RoundLimit::VALUES).is_empty());
    }
}

//! A server's part of a batch too large for one job: sent in rounds, as the blocking
//! transport sends it ([`RoundLimit`]), each round one job whose reply is due within the
//! read timeout of the round before it being answered.
//!
//! As one job, a large multi-get's whole reply had one read timeout: a `get_many` of
//! 100,000 values of 1 KB failed at a 500 ms timeout while its reply streamed in, where the
//! blocking transport, a read timeout per round, answered it (an outside audit). A round
//! is queued a few ahead of the one awaited ([`AHEAD`]), so the server always has the next
//! requests when it finishes a reply, and the queue holds a few rounds, not all of them.

use std::collections::VecDeque;
use std::ops::Range;

use newcache_transport::Result;
use tokio::time::Instant;

use super::{Answers, Build, TokioTextTransport};
use crate::batch::{Batch, RoundLimit};
use crate::command::Wire;

/// How many rounds of one server's part are queued at most while the first of them is
/// awaited.
const AHEAD: usize = 4;

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
    /// every round's answers, in order, as one list. Each round's answer is due within the
    /// read timeout of its queueing and of the round before it being answered; a round
    /// that fails fails the part (the rounds queued behind it are given up, their replies
    /// read and thrown away).
    pub(super) async fn in_rounds(
        &self,
        index: usize,
        rounds: &[(usize, Box<Build<'_>>)],
    ) -> Result<Answers> {
        super::in_runtime()?;
        let timeout = self.inner.config.read_timeout;
        let mut left = rounds.iter().map(|(_, build)| build.as_ref());
        let mut queued = VecDeque::with_capacity(AHEAD);
        let mut answered: Option<(Answers, Instant)> = None;
        loop {
            while queued.len() < AHEAD {
                let Some(build) = left.next() else { break };
                queued.push_back((self.submit(index, build).await?, build));
            }
            let Some((mut sub, build)) = queued.pop_front() else {
                break;
            };
            if let Some((_, at)) = &answered {
                sub.deadline = sub.deadline.max(*at + timeout);
            }
            let answers = self.wait(sub, build).await?;
            answered = Some(match answered {
                Some((mut all, _)) => {
                    all.list.extend(answers.list);
                    (all, Instant::now())
                }
                None => (answers, Instant::now()),
            });
        }
        Ok(match answered {
            Some((all, _)) => all,
            None => Answers {
                wire: Wire::Classic,
                list: Default::default(),
            },
        })
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

//! The stale policies: what readers do with a value past (or near) its soft expiry, as a
//! [`Policy`] by name, [`Xfetch`] with a chosen beta, or any [`StalePolicy`].

use crate::envelope::Envelope;
use crate::herd::Herd;

/// What a reader should do with an envelope it fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadDecision {
    /// Before its soft expiry: serve the value.
    Fresh,
    /// Past its soft expiry: report a miss to this reader (who recomputes) and store the bare
    /// old value again with this exptime, so the others keep being served it meanwhile.
    Stale {
        /// Exptime for the re-stored bare value (the herd timeout).
        reinsert_exptime: u32,
    },
}

/// Which stale policy a cache uses: what happens when readers meet a value past its soft
/// expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// django-newcache's scheme, kept for exact compatibility: the reader re-stores the bare
    /// old value for the herd timeout and reports a miss. Every reader that fetched the stale
    /// envelope before that re-store landed also reports a miss (the seed's race).
    Reinsert,
    /// Single winner on any memcached: the reader claims the refresh atomically (a CAS store
    /// of the same envelope with its soft expiry pushed forward by the herd timeout). Exactly
    /// one reader wins the CAS and reports a miss; everyone else is served the old value. A
    /// winner that never writes back is replaced after the herd timeout.
    #[default]
    Lease,
    /// XFetch (Vattani et al., VLDB 2015) on top of `Lease`: before the soft expiry, a reader
    /// recomputes early with a probability that grows as the expiry nears, scaled by how long
    /// the value took to compute (recorded in the envelope) and by `beta`
    /// ([`Herd::early_recompute`]); at the soft expiry, `Lease` applies.
    Early,
    /// memcached 1.6's own single winner, over the meta protocol (text transport): values are
    /// stored bare with TTL ttl + herd_timeout, and `mg ... R<herd_timeout>` hands the win to
    /// exactly one reader once the remaining TTL drops below the herd timeout (the moment
    /// the envelope would go stale); invalidation is `md ... I`. An envelope met under this
    /// policy (written by a cache on another policy) is handled as under `Lease`. The facade
    /// refuses it at build on a transport without the meta protocol, and switches a cache to
    /// `Lease` for good when its server refuses the first meta command (twemproxy, memcached
    /// before 1.6).
    Meta,
}

impl Policy {
    /// The policy's name, as the URL's `herd=` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Reinsert => "reinsert",
            Policy::Lease => "lease",
            Policy::Early => "early",
            Policy::Meta => "meta",
        }
    }

    /// Parses a name from the URL's `herd=`.
    pub fn from_name(name: &str) -> Option<Policy> {
        match name {
            "reinsert" => Some(Policy::Reinsert),
            "lease" => Some(Policy::Lease),
            "early" => Some(Policy::Early),
            "meta" => Some(Policy::Meta),
            _ => None,
        }
    }
}

/// What readers do with a value past (or near) its soft expiry: the one trait every stale
/// policy implements. The built-in policies are [`Policy`] (and [`Xfetch`] for `early` with a
/// chosen beta); implement it to plug in your own. Implementations decide only: the facade
/// does the round trips.
pub trait StalePolicy: Send + Sync + std::fmt::Debug {
    /// A short name for logs and the demo.
    fn name(&self) -> &str;

    /// What a reader at `now_millis` does with `envelope`. `u` is a fresh uniform draw in
    /// (0, 1] for probabilistic policies.
    fn decide(&self, herd: &Herd, envelope: &Envelope, now_millis: u64, u: f64) -> StaleAction;

    /// True when the server keeps the herd state (memcached 1.6's meta protocol): values are
    /// stored bare and reads follow the server's win flag instead of [`StalePolicy::decide`].
    fn server_side(&self) -> bool {
        false
    }

    /// True when [`StalePolicy::decide`] serves every value before its soft expiry as it
    /// is ([`StaleAction::Serve`], whatever `u`), so a reader of such a value need not ask
    /// (nor draw `u`). The default, false, has every read ask.
    fn serves_fresh(&self) -> bool {
        false
    }
}

impl StalePolicy for Policy {
    fn name(&self) -> &str {
        Policy::name(*self)
    }

    fn decide(&self, herd: &Herd, envelope: &Envelope, now_millis: u64, u: f64) -> StaleAction {
        match self {
            Policy::Early => Xfetch::default().decide(herd, envelope, now_millis, u),
            policy => herd.stale_action(*policy, envelope, now_millis),
        }
    }

    fn server_side(&self) -> bool {
        *self == Policy::Meta
    }

    /// Every policy but `early` (XFetch, which may recompute a fresh value ahead of its
    /// expiry).
    fn serves_fresh(&self) -> bool {
        *self != Policy::Early
    }
}

/// `herd=early` with a chosen beta: XFetch before the soft expiry, [`Policy::Lease`] at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Xfetch {
    /// XFetch's beta: 1.0 is the paper's optimum; larger recomputes earlier.
    pub beta: f64,
}

impl Default for Xfetch {
    fn default() -> Self {
        Xfetch { beta: 1.0 }
    }
}

impl StalePolicy for Xfetch {
    fn name(&self) -> &str {
        "early"
    }

    fn decide(&self, herd: &Herd, envelope: &Envelope, now_millis: u64, u: f64) -> StaleAction {
        match herd.stale_action(Policy::Early, envelope, now_millis) {
            StaleAction::Serve if herd.early_recompute(envelope, now_millis, self.beta, u) => {
                StaleAction::RecomputeEarly
            }
            action => action,
        }
    }
}

/// What a reader should do with an envelope it fetched, under a [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleAction {
    /// Before its soft expiry: serve the value.
    Serve,
    /// [`Policy::Reinsert`]: report a miss and store the bare old value with this exptime.
    ReinsertBare {
        /// Exptime of the re-stored bare value (the herd timeout).
        exptime: u32,
    },
    /// [`Policy::Lease`]: try to claim the refresh by CAS-storing this envelope (the same
    /// value) with this exptime. The reader whose CAS succeeds reports a miss and recomputes;
    /// a reader whose CAS fails is served the old value.
    Claim {
        /// The envelope to store, its soft expiry pushed forward by the herd timeout.
        envelope: Envelope,
        /// Exptime of the claimed item: twice the herd timeout and [`CLOCK_SLACK`], so that
        /// when a winner never writes back, the value is still there for the next claim.
        ///
        /// [`CLOCK_SLACK`]: crate::CLOCK_SLACK
        exptime: u32,
    },
    /// `early`: recompute ahead of the soft expiry; store nothing, the others are served.
    RecomputeEarly,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_that_serves_fresh_values_decides_to_serve_every_one() {
        let herd = Herd::new(60);
        let envelope = Envelope {
            soft_expiry_millis: 10_000,
            compute_millis: 5_000,
        };
        for policy in [Policy::Lease, Policy::Reinsert, Policy::Meta, Policy::Early] {
            let fresh_served = (0..=1000).all(|step| {
                let u = (f64::from(step) / 1000.0).max(1e-9);
                (0..10_000).step_by(500).all(|now| {
                    herd.on_read(&envelope, now) != ReadDecision::Fresh
                        || policy.decide(&herd, &envelope, now, u) == StaleAction::Serve
                })
            });
            assert_eq!(policy.serves_fresh(), fresh_served, "{policy:?}");
        }
        assert!(!Xfetch::default().serves_fresh());
    }

    #[test]
    fn policies_decide_through_one_trait() {
        let herd = Herd::new(60);
        let env = Envelope {
            soft_expiry_millis: 100_000,
            compute_millis: 1_000,
        };
        let policies: Vec<Box<dyn StalePolicy>> = vec![
            Box::new(Policy::Reinsert),
            Box::new(Policy::Lease),
            Box::new(Policy::Meta),
            Box::new(Xfetch { beta: 3.0 }),
        ];
        let u = (-1.0f64).exp();
        let near: Vec<StaleAction> = policies
            .iter()
            .map(|p| p.decide(&herd, &env, 97_500, u))
            .collect();
        assert_eq!(near[..3], [StaleAction::Serve; 3]);
        assert_eq!(near[3], StaleAction::RecomputeEarly);
        let stale: Vec<StaleAction> = policies
            .iter()
            .map(|p| p.decide(&herd, &env, 100_000, u))
            .collect();
        assert_eq!(stale[0], StaleAction::ReinsertBare { exptime: 60 });
        assert!(stale[1..]
            .iter()
            .all(|a| matches!(a, StaleAction::Claim { .. })));
        assert_eq!(
            policies
                .iter()
                .map(|p| (p.name().to_string(), p.server_side()))
                .collect::<Vec<_>>(),
            [
                ("reinsert".into(), false),
                ("lease".into(), false),
                ("meta".into(), true),
                ("early".into(), false)
            ]
        );
    }

    #[test]
    fn policies_have_url_names() {
        for p in [Policy::Reinsert, Policy::Lease, Policy::Early, Policy::Meta] {
            assert_eq!(Policy::from_name(p.name()), Some(p));
        }
        assert_eq!(Policy::from_name("nope"), None);
        assert_eq!(Policy::default(), Policy::Lease);
    }
}

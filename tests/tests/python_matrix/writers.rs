//! The writers: every transport, herd policy and codec newcache can write with.

use newcache::{SetOptions, Ttl};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Transport {
    Text,
    LmBinary,
    LmText,
}

impl Transport {
    const ALL: [Transport; 3] = [Transport::Text, Transport::LmBinary, Transport::LmText];

    pub(super) fn label(self) -> &'static str {
        match self {
            Transport::Text => "text",
            Transport::LmBinary => "lm-binary",
            Transport::LmText => "lm-text",
        }
    }

    pub(super) fn query(self) -> &'static str {
        match self {
            Transport::Text => "",
            Transport::LmBinary => "&binary=true",
            Transport::LmText => "&transport=libmemcached",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Herd {
    /// The default policy, a finite TTL.
    Lease,
    Reinsert,
    Early,
    /// Text transport only: libmemcached refuses it.
    Meta,
    /// `SetOptions::no_herd()`, a finite TTL.
    Off,
    /// `Ttl::Forever`, herd on.
    Forever,
    /// `lease` with `envelope=django-newcache`: herd-protected values stored as
    /// django-newcache stores them, `(newcache.Marker(), value, expiry)` pickled. Meant for
    /// clusters whose Python readers are django-newcache: any other reader gets the tuple,
    /// by design (see [`held_to_the_rule`]).
    DjangoEnvelope,
    /// `lease` with `compress_threshold=1024` (pylibmc's `min_compress_len`): the large value
    /// goes zlib-compressed (flag 8).
    Zlib,
}

impl Herd {
    const ALL: [Herd; 8] = [
        Herd::Lease,
        Herd::Reinsert,
        Herd::Early,
        Herd::Meta,
        Herd::Off,
        Herd::Forever,
        Herd::DjangoEnvelope,
        Herd::Zlib,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Herd::Lease => "lease",
            Herd::Reinsert => "reinsert",
            Herd::Early => "early",
            Herd::Meta => "meta",
            Herd::Off => "off",
            Herd::Forever => "forever",
            Herd::DjangoEnvelope => "dn-envelope",
            Herd::Zlib => "zlib",
        }
    }

    pub(super) fn query(self) -> &'static str {
        match self {
            Herd::Lease | Herd::Off | Herd::Forever => "",
            Herd::Reinsert => "&herd=reinsert",
            Herd::Early => "&herd=early",
            Herd::Meta => "&herd=meta",
            Herd::DjangoEnvelope => "&envelope=django-newcache",
            Herd::Zlib => "&compress_threshold=1024",
        }
    }

    pub(super) fn options(self) -> SetOptions {
        match self {
            Herd::Off => SetOptions::new(Ttl::Seconds(300)).no_herd(),
            Herd::Forever => SetOptions::new(Ttl::Forever),
            _ => SetOptions::new(Ttl::Seconds(300)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Codec {
    /// No `codec=` parameter: whatever newcache's default is.
    Default,
    Bincode,
    Json,
    Pickle,
}

impl Codec {
    const TESTED: [Codec; 3] = [Codec::Bincode, Codec::Json, Codec::Pickle];

    pub(super) fn label(self) -> &'static str {
        match self {
            Codec::Default => "default",
            Codec::Bincode => "bincode",
            Codec::Json => "json",
            Codec::Pickle => "pickle",
        }
    }

    pub(super) fn query(self) -> &'static str {
        match self {
            Codec::Default => "",
            Codec::Bincode => "&codec=bincode",
            Codec::Json => "&codec=json",
            Codec::Pickle => "&codec=pickle",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Writer {
    pub(super) transport: Transport,
    pub(super) herd: Herd,
    pub(super) codec: Codec,
}

impl Writer {
    pub(super) fn label(self) -> String {
        format!(
            "{}/{}/{}",
            self.transport.label(),
            self.herd.label(),
            self.codec.label()
        )
    }

    /// The writer's URL: a read timeout of 5 s, as the matrix is about values, not speed
    /// (under a loaded machine a store can outlast the 500 ms default: the test failed once
    /// in a full run beside two outside audits, its message not kept).
    pub(super) fn url(self, addr: &str) -> String {
        format!(
            "newcache://{addr}/?flavor=m-{}-{}-{}&read_timeout=5000{}{}{}",
            self.transport.label(),
            self.herd.label(),
            self.codec.label(),
            self.transport.query(),
            self.herd.query(),
            self.codec.query()
        )
    }

    /// Every transport x herd x codec the matrix covers: meta on the text transport only
    /// (libmemcached refuses it), django-newcache's envelope with the pickle codec only
    /// (newcache refuses to put another codec's bytes in it).
    pub(super) fn matrix() -> Vec<Writer> {
        let mut all = Vec::new();
        for transport in Transport::ALL {
            for herd in Herd::ALL {
                if herd == Herd::Meta && transport != Transport::Text {
                    continue;
                }
                for codec in Codec::TESTED {
                    if herd == Herd::DjangoEnvelope && codec != Codec::Pickle {
                        continue;
                    }
                    all.push(Writer {
                        transport,
                        herd,
                        codec,
                    });
                }
            }
        }
        all
    }

    /// The default-settings promise: no herd or codec parameter at all.
    pub(super) fn defaults() -> Vec<Writer> {
        [Transport::Text, Transport::LmBinary]
            .map(|transport| Writer {
                transport,
                herd: Herd::Lease,
                codec: Codec::Default,
            })
            .to_vec()
    }
}

//! What a multi-get read when some of its servers failed: the items of the servers that
//! answered, and the keys of the ones that did not, each with the failure.

use std::io;

use crate::{Error, Item};

/// A multi-get's answer, key by key ([`Transport::get_many_read`](crate::Transport::get_many_read)):
/// each key's item (`None`: a miss), and the keys whose server failed while the others
/// answered, with that failure. Their entries in `items` are `None`, but they are not
/// misses: nothing is known of them.
///
/// ```
/// use newcache_transport::{Error, Item, ManyRead};
/// use std::time::Duration;
///
/// let hung = Error::Timeout { server: "10.0.0.2:11211".into(), after: Duration::from_millis(500) };
/// let read = ManyRead::with_unread(vec![Some(Item { value: b"v".to_vec(), flags: 0, cas: None }), None], vec![(1, hung)]);
/// assert_eq!(read.items.len(), 2);
/// assert!(matches!(read.unread[0], (1, Error::Timeout { .. })));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct ManyRead<T = Item> {
    /// One entry per key, in the order asked: its item, or `None`.
    pub items: Vec<Option<T>>,
    /// The keys (their positions) that were not read because their server failed, each with
    /// the failure.
    pub unread: Vec<(usize, Error)>,
}

impl<T> ManyRead<T> {
    /// Every key read: `items` is the whole answer.
    pub fn all(items: Vec<Option<T>>) -> Self {
        ManyRead {
            items,
            unread: Vec::new(),
        }
    }

    /// `items`, with the keys in `unread` not read.
    pub fn with_unread(items: Vec<Option<T>>, unread: Vec<(usize, Error)>) -> Self {
        ManyRead { items, unread }
    }
}

impl Error {
    /// The same failure again, for another key (or caller) of the server that failed: an
    /// error holding an `io::Error` is not `Clone`, so that one is made anew (same kind,
    /// same message). Errors no server gives come back as an I/O error with their message.
    pub fn for_another_key(&self) -> Error {
        let again = |source: &io::Error| io::Error::new(source.kind(), source.to_string());
        match self {
            Error::Connect { server, source } => Error::Connect {
                server: server.clone(),
                source: again(source),
            },
            Error::Io { server, source } => Error::Io {
                server: server.clone(),
                source: again(source),
            },
            Error::Timeout { server, after } => Error::Timeout {
                server: server.clone(),
                after: *after,
            },
            Error::ServerDown { server, retry_in } => Error::ServerDown {
                server: server.clone(),
                retry_in: *retry_in,
            },
            Error::Protocol { server, detail } => Error::Protocol {
                server: server.clone(),
                detail: detail.clone(),
            },
            Error::Server { server, message } => Error::Server {
                server: server.clone(),
                message: message.clone(),
            },
            Error::Unsupported { server, command } => Error::Unsupported {
                server: server.clone(),
                command: command.clone(),
            },
            other => Error::Io {
                server: String::new(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

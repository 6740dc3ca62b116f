//! libmemcached's failures as typed [`Error`]s: its messages, the classification of its
//! return codes, and the servers and timeouts an error names.

use std::io;
use std::sync::PoisonError;
use std::time::Duration;

use libmemcached_sys::*;
use newcache_transport::Error;

use crate::copy::c_string;
use crate::pool::Handle;
use crate::BinaryTransport;

pub(crate) const BACKEND: &str = "libmemcached";

pub(crate) fn invalid(message: String) -> Error {
    Error::Backend {
        backend: BACKEND,
        code: MEMCACHED_INVALID_ARGUMENTS as i32,
        message,
    }
}

pub(crate) fn out_of_memory(what: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        code: MEMCACHED_MEMORY_ALLOCATION_FAILURE as i32,
        message: format!("libmemcached could not allocate {what}"),
    }
}

/// libmemcached's message for `rc` on `h`: the detailed last error when it is about `rc`,
/// else the generic text of `rc`.
pub(crate) fn message(h: &Handle, rc: memcached_return_t) -> String {
    Message::of_handle(h, rc).text
}

/// libmemcached's text for one failure.
#[derive(Debug, Clone)]
struct Message {
    /// The detailed message libmemcached recorded for the code, e.g. `A TIMEOUT OCCURRED,
    /// time out,  host: 127.0.0.1:41681 -> ./src/libmemcached/io.cc:220` (the handle's
    /// address it starts with, `(0x55d0) `, left out: [`without_pointer`]), else the
    /// code's generic text. libmemcached records details only for fatal codes and
    /// `CLIENT_ERROR` (`memcached_set_error` skips the others).
    text: String,
    /// `memcached_strerror` of the code, e.g. `A TIMEOUT OCCURRED`.
    generic: String,
}

impl Message {
    /// The handle's last error message when it is about `rc`, else the generic text.
    fn of_handle(h: &Handle, rc: memcached_return_t) -> Message {
        // SAFETY: h is a live handle used by this thread only; the returned strings are owned
        // by the handle (or static) and copied before the next libmemcached call.
        unsafe {
            let generic = c_string(memcached_strerror(h.as_ptr(), rc));
            let text = if memcached_last_error(h.as_ptr()) == rc {
                without_pointer(c_string(memcached_last_error_message(h.as_ptr())))
            } else {
                generic.clone()
            };
            Message { text, generic }
        }
    }

    /// True when libmemcached recorded more than the code's generic text.
    fn is_detailed(&self) -> bool {
        self.text != self.generic
    }

    /// What the detailed message says beyond the generic text, without the pointer,
    /// `host: ...` and ` -> file:line` parts libmemcached wraps it in: `time out` in the
    /// example above. Empty when there is no detail.
    fn detail(&self) -> &str {
        if !self.is_detailed() {
            return "";
        }
        let text = self.text.as_str();
        let rest = match text.find(self.generic.as_str()) {
            Some(at) => &text[at + self.generic.len()..],
            None => text
                .strip_prefix('(')
                .and_then(|t| t.split_once(") "))
                .map_or(text, |(_, t)| t),
        };
        let rest = rest.split(" -> ").next().unwrap_or(rest);
        let rest = rest.split("host: ").next().unwrap_or(rest);
        rest.trim_matches(|c: char| c == ',' || c.is_whitespace())
    }
}

/// One failed libmemcached call, as [`BinaryTransport::classify`] sees it.
struct Failure<'a> {
    rc: memcached_return_t,
    message: Message,
    /// The handle's `errno` for the failure, or 0.
    errno: i32,
    /// The server it is about, as configured.
    server: String,
    /// The command that failed, as memcached names it (`get`, `touch`, ...).
    command: &'a str,
    /// For `MEMCACHED_TIMEOUT`: the timeout that expired
    /// ([`BinaryTransport::expired_timeout`]).
    waited: Expired,
    /// For a server libmemcached leaves alone or has ejected: how long until it is tried
    /// again ([`BinaryTransport::retry_in`]).
    retry_in: Duration,
}

/// Which of libmemcached's timeouts expired, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// `connect_timeout`: no connection was made, so nothing was sent.
    Connect(Duration),
    /// `_poll_timeout`: a reply (or a send) did not come in time.
    Poll(Duration),
}

/// libmemcached's detailed message without the handle's address it starts with
/// (`(0x55eabf278150) CONNECTION FAILURE, ...`): it told a reader nothing and made the same
/// failure's message differ from one call to the next (an outside audit).
fn without_pointer(text: String) -> String {
    let stripped = text.strip_prefix("(0x").and_then(|rest| {
        let end = rest.find(") ")?;
        let hex = rest.get(..end)?;
        (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| rest.get(end + 2..))
            .flatten()
    });
    match stripped {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

fn io_kind(errno: i32) -> io::ErrorKind {
    if errno == 0 {
        io::ErrorKind::Other
    } else {
        io::Error::from_raw_os_error(errno).kind()
    }
}

pub(crate) fn err_message(err: &Error) -> String {
    match err {
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

impl BinaryTransport {
    pub(crate) fn all_servers(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The configured label of a libmemcached server.
    ///
    /// # Safety
    ///
    /// `server` is NULL or a live instance of a live handle.
    pub(crate) unsafe fn label_of(&self, server: *const memcached_instance_st) -> Option<String> {
        if server.is_null() {
            return None;
        }
        // SAFETY: server is a live instance, as the caller promises.
        let (host, port) = unsafe {
            (
                c_string(memcached_server_name(server)),
                memcached_server_port(server),
            )
        };
        Some(
            self.servers
                .iter()
                .find(|s| s.host == host && s.port == port)
                .map_or_else(|| format!("{host}:{port}"), |s| s.label.clone()),
        )
    }

    /// The label of the server at `position` of a handle, as the request's key was placed
    /// **before** the call (`position_for_key`), for the call's errors; every server when the
    /// key was placed nowhere.
    ///
    /// Never looked up again after the call: with `remove_failed`, libmemcached ejects a
    /// server inside the call that fails on it and rebuilds its ring at once, so the key
    /// then maps to a live server, which the error named, with that server's retry time
    /// (an outside audit).
    pub(crate) fn label_at(&self, position: Option<usize>) -> String {
        position
            .and_then(|p| self.server_at(p))
            .map_or_else(|| self.all_servers(), |i| self.label(i))
    }

    /// The server whose connection failed last on `h`, else every server.
    pub(crate) fn label_for_failure(&self, h: &Handle) -> String {
        // SAFETY: h is a live handle used by this thread only.
        let server = unsafe { memcached_server_get_last_disconnect(h.as_ptr()) };
        // SAFETY: server is NULL or an instance owned by h.
        unsafe { self.label_of(server) }.unwrap_or_else(|| self.all_servers())
    }

    /// The typed error for a failed libmemcached call on `h`.
    pub(crate) fn error(
        &self,
        h: &Handle,
        rc: memcached_return_t,
        server: String,
        command: &str,
    ) -> Error {
        let failure = self.failure(h, rc, server, command);
        let rc = failure.rc;
        let error = self.classify(failure);
        self.remember_auth_failures(rc, error)
    }

    /// What libmemcached says about a failed call on `h` that returned `rc`.
    fn failure<'c>(
        &self,
        h: &Handle,
        rc: memcached_return_t,
        server: String,
        command: &'c str,
    ) -> Failure<'c> {
        // SAFETY: h is a live handle used by this thread only.
        let (last, errno) = unsafe {
            (
                memcached_last_error(h.as_ptr()),
                memcached_last_error_errno(h.as_ptr()),
            )
        };
        // A batch reports SOME_ERRORS; the specific failure is the handle's last error.
        let rc = if rc == MEMCACHED_SOME_ERRORS && memcached_failed(last) {
            last
        } else {
            rc
        };
        Failure {
            rc,
            message: Message::of_handle(h, rc),
            errno,
            waited: self.expired_timeout(h, &server),
            retry_in: self.retry_in(h, rc, &server),
            server,
            command,
        }
    }

    /// For a server libmemcached answers for without trying it (`SERVER_TEMPORARILY_DISABLED`
    /// inside its retry time, `SERVER_MARKED_DEAD` once ejected, `NO_SERVERS` when every one
    /// is): how long until it is tried again, from the server's retry time. An ejected
    /// server with `dead_timeout` 0 never is ([`Duration::MAX`]), as libmemcached 1.1.4's
    /// `backoff_handling` sets it no new retry time.
    fn retry_in(&self, h: &Handle, rc: memcached_return_t, server: &str) -> Duration {
        match rc {
            MEMCACHED_SERVER_MARKED_DEAD if self.dead_timeout.is_zero() => Duration::MAX,
            MEMCACHED_SERVER_MARKED_DEAD => self.retry_in_of(h, server, self.dead_timeout),
            MEMCACHED_SERVER_TEMPORARILY_DISABLED | MEMCACHED_NO_SERVERS => {
                self.retry_in_of(h, server, self.retry_timeout)
            }
            _ => Duration::ZERO,
        }
    }

    /// Which timeout expired when a call on `h` failed with `MEMCACHED_TIMEOUT` for
    /// `server`: [`BinaryConfig`](crate::BinaryConfig)'s `connect_timeout` or `_poll_timeout`.
    ///
    /// libmemcached reports a connect that did not complete within `connect_timeout` and a
    /// reply (or a send) that did not come within `_poll_timeout` with the same code and the
    /// same message (`time out`, from one line of its `io.cc`), and no call tells its state,
    /// so the transport decides from what the two waits leave behind:
    ///
    /// 1. A wait that expires has lasted its whole timeout (less up to a millisecond:
    ///    libmemcached counts whole ones). A call that took less than one of the two
    ///    timeouts (and at least the other) cannot have waited for that one to expire: the
    ///    other did. With the defaults (250 ms connect, 500 ms poll) this
    ///    decides every connect timeout to a server with one address.
    /// 2. A call that lasted both is named after the longer timeout, which is the likelier:
    ///    the shorter one would have had to expire several times (one connect per address
    ///    of the host; a fresh connection's connect and then the poll wait is as likely).
    ///    The connect timeout is named only if libmemcached marked this server as the
    ///    handle's last disconnected one (`memcached_server_get_last_disconnect`), which it
    ///    does after a failed connect and, over TCP, never after a read or write timeout.
    ///
    /// `receive_timeout` and `send_timeout` (`SO_RCVTIMEO`, `SO_SNDTIMEO`) never expire as
    /// such: libmemcached's sockets are non-blocking and it waits in `poll()` with
    /// `_poll_timeout`, so that is what a read or write timeout reports.
    fn expired_timeout(&self, h: &Handle, server: &str) -> Expired {
        let (connect, poll) = (self.connect_timeout, self.poll_of(h));
        // libmemcached keeps its timeouts in whole milliseconds, and a shortened poll
        // timeout is cut to them: a poll wait that expired may have lasted up to a
        // millisecond less than the `Duration` asked (374.10 ms of 374.28 ms, measured),
        // which read as "under the poll timeout, so the connect's" and named a reply's
        // timeout a failure to connect.
        let took = h.elapsed() + Duration::from_millis(2);
        match (took >= connect, took >= poll) {
            (true, false) => Expired::Connect(connect),
            (false, true) => Expired::Poll(poll),
            _ if connect > poll && self.last_disconnected(h).as_deref() == Some(server) => {
                Expired::Connect(connect)
            }
            _ => Expired::Poll(poll),
        }
    }

    /// The configured label of the server libmemcached last disconnected on `h`, if any.
    fn last_disconnected(&self, h: &Handle) -> Option<String> {
        // SAFETY: h is a live handle used by this thread only.
        let server = unsafe { memcached_server_get_last_disconnect(h.as_ptr()) };
        // SAFETY: server is NULL or an instance owned by h.
        unsafe { self.label_of(server) }
    }

    /// After a failed connect (an authentication failure included) libmemcached answers
    /// requests to that server with "temporarily disabled" for `retry_timeout`. Keep calling
    /// that an authentication failure while the server's last real failure was one.
    fn remember_auth_failures(&self, rc: memcached_return_t, error: Error) -> Error {
        let mut failed = self
            .auth_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match error {
            Error::Auth { ref server, .. } => {
                failed.insert(server.clone());
                error
            }
            Error::ServerDown { server, retry_in }
                if rc == MEMCACHED_SERVER_TEMPORARILY_DISABLED =>
            {
                if failed.contains(&server) {
                    Error::Auth {
                        message: format!(
                            "libmemcached leaves the server alone for {retry_in:?} more after its authentication failed"
                        ),
                        server,
                    }
                } else {
                    Error::ServerDown { server, retry_in }
                }
            }
            Error::Connect { ref server, .. } | Error::Timeout { ref server, .. } => {
                failed.remove(server);
                error
            }
            other => other,
        }
    }

    /// The typed error for one failure. Every code maps to a variant whose text keeps
    /// libmemcached's message, except four typed cases whose message adds nothing:
    ///
    /// * `MEMCACHED_TIMEOUT` is [`Error::Timeout`] with the timeout that expired
    ///   ([`BinaryTransport::expired_timeout`]), or [`Error::Connect`] (`TimedOut`) when
    ///   that was the connect timeout; libmemcached's detail is then only `time out`
    ///   (or `timeout was set to zero`, `timeout on interrupt or restart`) and the server.
    ///   libmemcached 1.1.4 also reports a name lookup that could not finish (getaddrinfo's
    ///   `EAI_AGAIN`) as a timeout, with the resolver's text as detail: that is a failure to
    ///   connect and becomes [`Error::Connect`] with the whole message.
    /// * `MEMCACHED_ERROR` is what libmemcached's text-protocol reader returns when the
    ///   server answers `ERROR`, memcached's reply to a command it does not know (`touch`
    ///   before memcached 1.4.8, for one): in text mode, with no detail recorded (libmemcached
    ///   records none for that reply, whose generic text is `ERROR was returned by server`),
    ///   it is [`Error::Unsupported`] naming the command. The header gives the same value to
    ///   `MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE`, and libmemcached's binary reader never
    ///   returns it (an unknown binary command is `UNKNOWN_READ_FAILURE`), so in binary mode,
    ///   or when a detail was recorded, it is [`Error::Backend`] with code and message: a
    ///   failure of the client's own, never mislabelled "unsupported".
    /// * `MEMCACHED_E2BIG` on a store is [`Error::ValueTooLarge`] (`ITEM TOO BIG` is all the
    ///   message says; see `store_on`); anywhere else it is [`Error::Backend`].
    /// * A server libmemcached answers for without trying it (`SERVER_TEMPORARILY_DISABLED`,
    ///   `SERVER_MARKED_DEAD`, `NO_SERVERS`) is [`Error::ServerDown`] with `retry_in`
    ///   ([`BinaryTransport::retry_in`]), what the text transport answers for a server it
    ///   leaves alone or has ejected.
    fn classify(&self, f: Failure<'_>) -> Error {
        let Failure {
            rc,
            message,
            errno,
            server,
            command,
            waited,
            retry_in,
        } = f;
        let connect_kind = |default| match io_kind(errno) {
            io::ErrorKind::Other => default,
            k => k,
        };
        match rc {
            // Answered without trying the server: the text transport's "down" answer.
            MEMCACHED_SERVER_MARKED_DEAD
            | MEMCACHED_SERVER_TEMPORARILY_DISABLED
            | MEMCACHED_NO_SERVERS => Error::ServerDown { server, retry_in },
            // libmemcached says CONNECTION_FAILURE when a connected server closes the
            // connection (`recv` returned 0): that server was reachable, so it is an I/O
            // error, as the text transport reports it, not a failure to connect.
            MEMCACHED_CONNECTION_FAILURE
                if message
                    .detail()
                    .to_ascii_lowercase()
                    .contains("server has disconnected") =>
            {
                Error::Io {
                    server,
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, message.text),
                }
            }
            // A reset or a broken pipe comes from a connection that was open: the request
            // may have reached the server (and been applied), so it is an I/O error, whose
            // outcome is unknown, not a failure to connect, which a caller may retry as
            // never sent.
            MEMCACHED_CONNECTION_FAILURE
                if matches!(
                    io_kind(errno),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Error::Io {
                    server,
                    source: io::Error::new(io_kind(errno), message.text),
                }
            }
            MEMCACHED_CONNECTION_FAILURE
            | MEMCACHED_HOST_LOOKUP_FAILURE
            | MEMCACHED_CONNECTION_BIND_FAILURE => Error::Connect {
                server,
                source: io::Error::new(
                    connect_kind(io::ErrorKind::ConnectionRefused),
                    message.text,
                ),
            },
            MEMCACHED_TIMEOUT => {
                let detail = message.detail().to_ascii_lowercase();
                if detail.is_empty() || detail.contains("time") {
                    match waited {
                        Expired::Poll(after) => Error::Timeout { server, after },
                        // No connection, so nothing sent: a failure to connect, as the text
                        // transport reports it. It was a timeout ("may or may not have
                        // run ... raise the read/write timeout": an outside audit).
                        Expired::Connect(after) => Error::Connect {
                            server,
                            source: io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("connecting timed out after {after:?} (connect_timeout)"),
                            ),
                        },
                    }
                } else {
                    Error::Connect {
                        server,
                        source: io::Error::new(connect_kind(io::ErrorKind::TimedOut), message.text),
                    }
                }
            }
            MEMCACHED_AUTH_FAILURE | MEMCACHED_AUTH_PROBLEM | MEMCACHED_AUTH_CONTINUE => {
                Error::Auth {
                    server,
                    message: format!("{}{}", message.text, self.auth_hint()),
                }
            }
            MEMCACHED_CLIENT_ERROR => Error::Client {
                server,
                message: message.text,
            },
            MEMCACHED_SERVER_ERROR | MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE => Error::Server {
                server,
                message: message.text,
            },
            MEMCACHED_ERROR if !self.binary && !message.is_detailed() => Error::Unsupported {
                server,
                command: command.to_string(),
            },
            MEMCACHED_WRITE_FAILURE
            | MEMCACHED_READ_FAILURE
            | MEMCACHED_UNKNOWN_READ_FAILURE
            | MEMCACHED_PARTIAL_READ
            | MEMCACHED_ERRNO => Error::Io {
                server,
                source: io::Error::new(io_kind(errno), message.text),
            },
            MEMCACHED_PROTOCOL_ERROR => Error::Protocol {
                server,
                detail: message.text,
            },
            _ => Error::Backend {
                backend: BACKEND,
                code: rc as i32,
                message: message.text,
            },
        }
    }

    /// The error libmemcached recorded on the server at position `p` of `h` (the last one:
    /// libmemcached keeps them newest first), which failed during the call just made.
    pub(crate) fn instance_failure(&self, h: &Handle, p: usize, command: &str) -> Error {
        let server = self
            .server_at(p)
            .map_or_else(|| self.all_servers(), |i| self.label(i));
        let instance = self.instance_at(h, p);
        if instance.is_null() {
            return Error::NoServers;
        }
        // SAFETY: instance is a live server of h; its error string is copied at once.
        let (rc, text) = unsafe {
            (
                memcached_server_error_return(instance),
                without_pointer(c_string(memcached_server_error(instance))),
            )
        };
        if !memcached_failed(rc) {
            return Error::Io {
                server,
                source: io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!(
                        "libmemcached closed the connection during {command} and recorded no error"
                    ),
                ),
            };
        }
        // SAFETY: memcached_strerror returns a static string.
        let generic = unsafe { c_string(memcached_strerror(h.as_ptr(), rc)) };
        let failure = Failure {
            rc,
            message: Message { text, generic },
            errno: 0,
            waited: self.expired_timeout(h, &server),
            retry_in: self.retry_in(h, rc, &server),
            server,
            command,
        };
        self.remember_auth_failures(rc, self.classify(failure))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{BinaryConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POLL_TIMEOUT};

    /// A transport that never connects (nothing listens on port 1 and nothing is sent).
    fn unconnected(binary: bool) -> BinaryTransport {
        BinaryTransport::new(BinaryConfig {
            binary_protocol: binary,
            ..BinaryConfig::new(["127.0.0.1:1"])
        })
        .unwrap()
    }

    #[test]
    fn every_return_code_maps_to_a_typed_error_that_keeps_libmemcacheds_text() {
        // Every value from SUCCESS (0) to MAXIMUM_RETURN (49), and the alias
        // CONNECTION_SOCKET_CREATE_FAILURE = ERROR (11).
        let values: BTreeSet<memcached_return_t> = RETURN_VALUES.iter().map(|v| v.1).collect();
        assert_eq!(values, (0..=MEMCACHED_MAXIMUM_RETURN).collect());
        assert_eq!(RETURN_VALUES.len(), 51);
        for binary in [true, false] {
            let t = unconnected(binary);
            let h = t.lease().unwrap();
            for &(name, rc) in RETURN_VALUES {
                let failure = t.failure(&h, rc, "127.0.0.1:1".into(), "touch");
                let generic = failure.message.generic.clone();
                assert!(!generic.is_empty(), "{name}: no strerror text");
                let error = t.classify(failure);
                let shown = error.to_string();
                match (&error, rc) {
                    // The documented typed cases, whose message adds nothing.
                    (Error::Timeout { server, after }, MEMCACHED_TIMEOUT) => {
                        assert_eq!(server, "127.0.0.1:1");
                        assert!(
                            [DEFAULT_CONNECT_TIMEOUT, DEFAULT_POLL_TIMEOUT].contains(after),
                            "{after:?}"
                        );
                    }
                    (Error::Unsupported { server, command }, MEMCACHED_ERROR) if !binary => {
                        assert_eq!((server.as_str(), command.as_str()), ("127.0.0.1:1", "touch"));
                    }
                    // Answered without trying the server: the text transport's answer.
                    (
                        Error::ServerDown { server, .. },
                        MEMCACHED_SERVER_MARKED_DEAD
                        | MEMCACHED_SERVER_TEMPORARILY_DISABLED
                        | MEMCACHED_NO_SERVERS,
                    ) => assert_eq!(server, "127.0.0.1:1"),
                    _ => assert!(
                        shown.contains(&generic),
                        "{name} ({rc}, binary {binary}) became {error:?}, whose text {shown:?} lacks libmemcached's {generic:?}"
                    ),
                }
                if rc == MEMCACHED_ERROR && binary {
                    assert!(
                        matches!(error, Error::Backend { code: 11, .. }),
                        "{error:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_handles_address_is_left_out_of_a_message() {
        assert_eq!(
            without_pointer("(0x55eabf278150) CONNECTION FAILURE, host: a:1".into()),
            "CONNECTION FAILURE, host: a:1"
        );
        for kept in [
            "CONNECTION FAILURE",
            "(0x) x",
            "(0xzz) x",
            "(0x12)x",
            "(0x12",
        ] {
            assert_eq!(without_pointer(kept.into()), kept);
        }
    }

    #[test]
    fn a_detailed_error_or_a_timeout_that_is_not_one_keeps_the_message() {
        let t = unconnected(false);
        let h = t.lease().unwrap();
        let failure = |rc, text: &str| Failure {
            rc,
            message: Message {
                text: text.to_string(),
                // SAFETY: memcached_strerror returns a static string.
                generic: unsafe { c_string(memcached_strerror(h.as_ptr(), rc)) },
            },
            errno: 0,
            server: "cache:11211".into(),
            command: "get",
            waited: Expired::Poll(DEFAULT_POLL_TIMEOUT),
            retry_in: Duration::ZERO,
        };
        // libmemcached's own text for a poll timeout (copied from a real one).
        let timeout = "(0x5606bb234970) A TIMEOUT OCCURRED, time out,  host: 127.0.0.1:41681 -> ./src/libmemcached/io.cc:220";
        assert_eq!(
            failure(MEMCACHED_TIMEOUT, timeout).message.detail(),
            "time out"
        );
        assert!(matches!(
            t.classify(failure(MEMCACHED_TIMEOUT, timeout)),
            Error::Timeout { after, .. } if after == DEFAULT_POLL_TIMEOUT
        ));
        // getaddrinfo's EAI_AGAIN, which libmemcached reports as MEMCACHED_TIMEOUT.
        let lookup = "(0x1) A TIMEOUT OCCURRED, Temporary failure in name resolution,  host: cache:11211 -> ./src/libmemcached/connect.cc:65";
        match t.classify(failure(MEMCACHED_TIMEOUT, lookup)) {
            Error::Connect { server, source } => {
                assert_eq!(server, "cache:11211");
                assert_eq!(source.kind(), io::ErrorKind::TimedOut);
                assert!(source.to_string().contains("name resolution"), "{source}");
            }
            other => panic!("{other:?}"),
        }
        // MEMCACHED_ERROR with a recorded detail is libmemcached's own failure (the value
        // is also CONNECTION_SOCKET_CREATE_FAILURE), not the server's "ERROR".
        let own = "(0x1) ERROR was returned by server, socket() failed -> x.cc:1";
        match t.classify(failure(MEMCACHED_ERROR, own)) {
            Error::Backend { code, message, .. } => {
                assert_eq!(code, 11);
                assert!(message.contains("socket() failed"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.classify(failure(MEMCACHED_ERROR, "ERROR was returned by server")),
            Error::Unsupported { .. }
        ));
    }
}

//! Opening a connection: TCP (no delay) or a unix-domain socket, within the connect
//! timeout, and with [`Protocol::Auto`] the meta probe the blocking transport sends, read
//! and judged by the same rules ([`probe_verdict`]).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use newcache_transport::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{lookup_host, TcpStream, UnixStream};
use tokio::time::Instant;

use super::halves::{ReadHalf, WriteHalf};
use crate::command::Wire;
use crate::conn::{Endpoint, ReadBuf, WIRE_CLASSIC, WIRE_META};
use crate::errors::UNKNOWN_COMMAND;
use crate::proto::{self, meta, Decoder, Expect, Reply};
use crate::{probe_verdict, version_verdict, ProbeVerdict, Protocol, TextConfig};

/// A server's address and what it was found to speak.
pub(super) struct Target<'a> {
    pub(super) label: &'a str,
    pub(super) endpoint: &'a Endpoint,
    pub(super) wire: &'a std::sync::atomic::AtomicU8,
    /// The TLS settings and the name the server's certificate must carry, with TLS.
    #[cfg(feature = "tls")]
    pub(super) tls: Option<&'a super::TlsTarget>,
}

/// A connection, in the dialect the server speaks (probed when not known yet).
pub(super) async fn open(
    config: &TextConfig,
    target: &Target<'_>,
    opaque: u32,
) -> Result<(ReadHalf, WriteHalf, Wire)> {
    let (reader, writer) = connect(config, target).await?;
    #[cfg(feature = "tracing")]
    tracing::debug!(server = %target.label, "memcached connection opened (async)");
    let wire = match config.protocol {
        Protocol::Meta => Wire::Meta,
        Protocol::Classic => Wire::Classic,
        Protocol::Auto => match target.wire.load(Ordering::Relaxed) {
            WIRE_META => Wire::Meta,
            WIRE_CLASSIC => Wire::Classic,
            _ => return probe(config, target, reader, writer, opaque).await,
        },
    };
    Ok((reader, writer, wire))
}

async fn connect(config: &TextConfig, target: &Target<'_>) -> Result<(ReadHalf, WriteHalf)> {
    let connect_err = |source| Error::Connect {
        server: target.label.to_string(),
        source,
    };
    let timed_out = || {
        connect_err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {:?}", config.connect_timeout),
        ))
    };
    match target.endpoint {
        Endpoint::Tcp(address) => {
            let addrs: Vec<SocketAddr> =
                match tokio::time::timeout(config.connect_timeout, lookup_host(address.as_str()))
                    .await
                {
                    Ok(Ok(addrs)) => addrs.collect(),
                    Ok(Err(e)) => return Err(connect_err(e)),
                    Err(_) => {
                        return Err(connect_err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the name was not looked up within {:?} (the connect timeout)",
                                config.connect_timeout
                            ),
                        )))
                    }
                };
            let stream = connect_each(&addrs, config.connect_timeout)
                .await
                .map_err(connect_err)?;
            stream.set_nodelay(true).map_err(connect_err)?;
            #[cfg(feature = "tls")]
            if let Some(tls) = target.tls {
                return tls_halves(config, tls, super::tls::Socket::Tcp(stream))
                    .await
                    .map_err(|e| crate::tls::connect_error(target.label.to_string(), e));
            }
            let (r, w) = stream.into_split();
            Ok((ReadHalf::Tcp(r), WriteHalf::Tcp(w)))
        }
        Endpoint::Unix(path) => {
            let stream =
                match tokio::time::timeout(config.connect_timeout, UnixStream::connect(path)).await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return Err(connect_err(e)),
                    Err(_) => return Err(timed_out()),
                };
            #[cfg(feature = "tls")]
            if let Some(tls) = target.tls {
                return tls_halves(config, tls, super::tls::Socket::Unix(stream))
                    .await
                    .map_err(|e| crate::tls::connect_error(target.label.to_string(), e));
            }
            let (r, w) = stream.into_split();
            Ok((ReadHalf::Unix(r), WriteHalf::Unix(w)))
        }
    }
}

/// The TLS handshake on a connected socket, within the connect timeout and the read
/// timeout together (the blocking transport's bound), and the connection's halves.
#[cfg(feature = "tls")]
async fn tls_halves(
    config: &TextConfig,
    tls: &super::TlsTarget,
    socket: super::tls::Socket,
) -> io::Result<(ReadHalf, WriteHalf)> {
    let budget = config.connect_timeout.saturating_add(config.read_timeout);
    let handshake = super::tls::TlsStream::handshake(tls.config.clone(), tls.name.clone(), socket);
    match tokio::time::timeout(budget, handshake).await {
        Ok(Ok(stream)) => Ok((ReadHalf::Tls(stream.clone()), WriteHalf::Tls(stream))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the TLS handshake did not finish within {budget:?} (the connect timeout and the read timeout)"),
        )),
    }
}

/// A TCP connection to the first of `addrs` that takes one, each tried in turn with the
/// whole connect `timeout`, as the blocking transport and libmemcached try them: a host
/// whose first address is down (a broken IPv6 route beside a working IPv4 one) is still
/// reached. (One timeout for the lookup and every address together, as this transport had
/// it, gave up on such a host before it tried the address that works.)
async fn connect_each(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in addrs {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                last = e;
                continue;
            }
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection to {addr} within {timeout:?}"),
                );
                continue;
            }
        };
        match crate::connect::not_to_itself(stream.local_addr(), stream.peer_addr()) {
            Ok(()) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Whether the server closes a connection, opened for the question, on a command it does
/// not know ([`UNKNOWN_COMMAND`]): a proxy that closes the connection on what it does not
/// proxy (twemproxy) does; memcached answers `ERROR`. Asked on a connection of its own, so
/// that the requests of other tasks do not share the close.
pub(super) async fn closes_on_unknown_commands(config: &TextConfig, target: &Target<'_>) -> bool {
    let Ok((mut reader, mut writer)) = connect(config, target).await else {
        return false;
    };
    let mut request = Vec::new();
    proto::encode_line(&mut request, UNKNOWN_COMMAND);
    matches!(
        ask(
            config,
            target.label,
            &mut reader,
            &mut writer,
            &request,
            Expect::Status
        )
        .await,
        Err(ReadFailure::ClosedWithoutReply)
    )
}

/// How reading one reply ended badly.
enum ReadFailure {
    /// The connection closed before any byte of the reply.
    ClosedWithoutReply,
    Failed(Error),
}

/// Writes `request` and reads one reply of kind `expect`: the reply, its tag, and whether
/// bytes followed it.
async fn ask(
    config: &TextConfig,
    label: &str,
    reader: &mut ReadHalf,
    writer: &mut WriteHalf,
    request: &[u8],
    expect: Expect,
) -> std::result::Result<(Reply, meta::Tag, bool), ReadFailure> {
    let io_err = |e: io::Error, after: Duration| match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout {
            server: label.to_string(),
            after,
        },
        _ => Error::Io {
            server: label.to_string(),
            source: e,
        },
    };
    let timeout = |after: Duration| Error::Timeout {
        server: label.to_string(),
        after,
    };
    match tokio::time::timeout(config.write_timeout, writer.write_all(request)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ReadFailure::Failed(io_err(e, config.write_timeout))),
        Err(_) => return Err(ReadFailure::Failed(timeout(config.write_timeout))),
    }
    let deadline = Instant::now() + config.read_timeout;
    let mut buf = ReadBuf::new();
    let mut decoder = Decoder::new(expect);
    let mut received = false;
    loop {
        let parsed = decoder.decode(buf.filled()).map_err(|e| {
            ReadFailure::Failed(Error::Protocol {
                server: label.to_string(),
                detail: e.0,
            })
        })?;
        buf.consume(decoder.consumed());
        if let Some(reply) = parsed {
            return Ok((reply, *decoder.tag(), !buf.filled().is_empty()));
        }
        let spare = buf.spare();
        let offered = spare.len();
        let n = match tokio::time::timeout_at(deadline, reader.read(spare)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(ReadFailure::Failed(io_err(e, config.read_timeout))),
            Err(_) => return Err(ReadFailure::Failed(timeout(config.read_timeout))),
        };
        if n == 0 {
            if !received {
                return Err(ReadFailure::ClosedWithoutReply);
            }
            return Err(ReadFailure::Failed(Error::Io {
                server: label.to_string(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection mid-reply",
                ),
            }));
        }
        received = true;
        buf.filled_by(n, offered);
    }
}

/// Sends the meta probe and judges its reply as the blocking transport does: the probe's
/// tag back is meta (on this connection); `ERROR`, `CLIENT_ERROR` or an untagged meta reply
/// is classic (on a new connection); a connection closed without a reply is classic when
/// the server answers `version` on a new one (twemproxy); anything else is an error, and
/// the next connection probes again. Classic is for good, so it takes two probes' word,
/// the second on a new connection (`TextTransport::end_probe` says why).
async fn probe(
    config: &TextConfig,
    target: &Target<'_>,
    reader: ReadHalf,
    writer: WriteHalf,
    opaque: u32,
) -> Result<(ReadHalf, WriteHalf, Wire)> {
    if let Some((reader, writer)) = probe_once(config, target, reader, writer, opaque).await? {
        return Ok((reader, writer, Wire::Meta));
    }
    let (reader, writer) = connect(config, target).await?;
    if let Some((reader, writer)) =
        probe_once(config, target, reader, writer, opaque.wrapping_add(1)).await?
    {
        return Ok((reader, writer, Wire::Meta));
    }
    target.wire.store(WIRE_CLASSIC, Ordering::Relaxed);
    let (reader, writer) = connect(config, target).await?;
    Ok((reader, writer, Wire::Classic))
}

/// One probe on this connection: `Some` connection when the server speaks meta (marked
/// so), `None` when it answered as a classic server (nothing marked yet).
async fn probe_once(
    config: &TextConfig,
    target: &Target<'_>,
    mut reader: ReadHalf,
    mut writer: WriteHalf,
    opaque: u32,
) -> Result<Option<(ReadHalf, WriteHalf)>> {
    let label = target.label;
    let mut request = Vec::new();
    meta::encode_probe(&mut request, opaque);
    let mismatch = |detail: String| Error::Protocol {
        server: label.to_string(),
        detail: format!(
            "the reply does not answer its request ({detail}); the connection was closed"
        ),
    };
    match ask(
        config,
        label,
        &mut reader,
        &mut writer,
        &request,
        Expect::Meta,
    )
    .await
    {
        Ok((reply, tag, leftover)) => match probe_verdict(&reply, &tag, opaque) {
            Ok(ProbeVerdict::Meta) => {
                if leftover {
                    return Err(mismatch("bytes after the reply to the meta probe".into()));
                }
                target.wire.store(WIRE_META, Ordering::Relaxed);
                Ok(Some((reader, writer)))
            }
            Ok(ProbeVerdict::Classic) => Ok(None),
            Ok(ProbeVerdict::Failed(message)) => Err(Error::Server {
                server: label.to_string(),
                message,
            }),
            Err(m) => Err(mismatch(m.0)),
        },
        Err(ReadFailure::ClosedWithoutReply) => {
            let (mut reader, mut writer) = connect(config, target).await?;
            let mut version = Vec::new();
            proto::encode_line(&mut version, "version");
            let status = match ask(
                config,
                label,
                &mut reader,
                &mut writer,
                &version,
                Expect::Status,
            )
            .await
            {
                Ok((Reply::Status(status), _, false)) => Some(status),
                _ => None,
            };
            match version_verdict(label, status) {
                Some(classic) => classic.map(|()| None),
                None => Err(crate::errors::probe_closed(label)),
            }
        }
        Err(ReadFailure::Failed(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use newcache_testkit::Blackhole;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A host whose first address is down is reached on its second, each address given
    /// the whole connect timeout; addresses that are all down fail with the last one's
    /// timeout, after one timeout each.
    #[test]
    fn each_address_gets_the_whole_connect_timeout_in_turn() {
        const TIMEOUT: Duration = Duration::from_millis(200);
        let down = Blackhole::start();
        let down: SocketAddr = down.addr().parse().unwrap();
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live_addr = live.local_addr().unwrap();
        runtime().block_on(async {
            let started = Instant::now();
            let stream = connect_each(&[down, live_addr], TIMEOUT).await.unwrap();
            assert_eq!(stream.peer_addr().unwrap(), live_addr);
            assert!(started.elapsed() >= TIMEOUT, "{:?}", started.elapsed());
            let started = Instant::now();
            let e = connect_each(&[down, down], TIMEOUT).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
            assert!(started.elapsed() >= TIMEOUT * 2, "{:?}", started.elapsed());
            let e = connect_each(&[], TIMEOUT).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        });
    }
}

//! TLS (feature `tls`): rustls with the `ring` provider, servers verified against a CA file.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;

use newcache_transport::Error;

use crate::proto::{parse_status, Status};
use crate::stream::Socket;
use crate::TlsConfig;

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn pem_error(what: &str, path: &Path, e: impl std::fmt::Display) -> io::Error {
    invalid(format!(
        "TLS: cannot read the {what} {}: {e}",
        path.display()
    ))
}

fn certificates(what: &str, path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "it holds no PEM certificate"));
    }
    Ok(certs)
}

/// The rustls client settings: the CA file's certificates as the only roots, the client
/// certificate when given, TLS 1.2 and 1.3.
pub(crate) fn client_config(config: &TlsConfig) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("CA file (tls_ca)", &config.ca_file)? {
        roots
            .add(cert)
            .map_err(|e| pem_error("CA file (tls_ca)", &config.ca_file, e))?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots);
    let client = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("client certificate (tls_cert)", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| pem_error("client key (tls_key)", key, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(format!("TLS: the client certificate and key: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(invalid(
                "TLS: a client certificate (tls_cert) needs its key (tls_key), and a key its certificate".into(),
            ))
        }
    };
    Ok(Arc::new(client))
}

/// The name `server`'s certificate must carry: the configured override, else the host it
/// was configured by (a DNS name or an IP address). A unix-domain socket has none.
pub(crate) fn server_name(
    config: &TlsConfig,
    server: &newcache_placement::Server,
) -> io::Result<ServerName<'static>> {
    let name = match &config.server_name {
        Some(name) => name.clone(),
        None if server.port == 0 => {
            return Err(invalid(format!(
                "TLS to the unix-domain socket {} needs the name its certificate carries (tls_server_name)",
                server.host
            )))
        }
        None => server.host.clone(),
    };
    ServerName::try_from(name.clone())
        .map_err(|e| invalid(format!("TLS: {name:?} is not a server name: {e}")))
}

/// The TLS handshake on a connected socket, given up at `deadline`: each read of the
/// socket waits no longer than what is left, and the socket's read timeout is
/// `read_timeout` again after. (rustls' `complete_io` reads until the handshake is done,
/// each read with the socket's whole timeout: a server sending a byte every 5 ms took 10 s
/// to connect where the deadline was 600 ms, one sending every 100 ms over a minute; an
/// outside audit.) A certificate that does not verify is an error of kind `InvalidData`
/// whose source is the [`rustls::Error`].
pub(crate) fn handshake(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    mut socket: Socket,
    deadline: Instant,
    read_timeout: Duration,
) -> io::Result<StreamOwned<ClientConnection, Socket>> {
    let late = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the TLS handshake did not finish in time",
        )
    };
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut heard = Heard::default();
    // Until the handshake is done and what it has to say is sent (the client's last
    // message comes after the server's).
    while conn.is_handshaking() || conn.wants_write() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        if conn.wants_write() {
            match conn.write_tls(&mut socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        socket.set_read_timeout(Some(left))?;
        match conn.read_tls(&mut Hearing(&mut socket, &mut heard)) {
            Ok(0) => return Err(heard.closed()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late())
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = conn.process_new_packets() {
            // The alert saying why, as rustls' own `complete_io` sends it.
            let _ = conn.write_tls(&mut socket);
            hear_the_rest(&mut heard, &mut socket, deadline);
            return Err(heard.failed(e));
        }
    }
    socket.set_read_timeout(Some(read_timeout))?;
    Ok(StreamOwned::new(conn, socket))
}

/// The first bytes a server sent during a TLS handshake, kept to say what a server that
/// answered in plain text said: memcached at its connection limit writes `ERROR Too many
/// open connections` on a connection it accepts, before any handshake, and closes it (the
/// handshake failed as rustls' "corrupt message", which named no limit); a port without TLS
/// answers the client's hello as a command it does not know.
#[derive(Debug, Default)]
pub(crate) struct Heard(Vec<u8>);

/// How many of the first bytes [`Heard`] keeps: a status line of memcached's.
pub(crate) const HEARD: usize = 256;

/// How long a handshake that failed on a line of plain text waits for the rest of the
/// line ([`Heard::line_unfinished`]).
pub(crate) const REST_OF_LINE: Duration = Duration::from_millis(200);

/// Reads the rest of a plain-text line the handshake failed on, for [`Heard`] to say what
/// it was, within [`REST_OF_LINE`] and `deadline`.
fn hear_the_rest(heard: &mut Heard, socket: &mut Socket, deadline: Instant) {
    let until = deadline.min(Instant::now() + REST_OF_LINE);
    let mut buf = [0u8; HEARD];
    while heard.line_unfinished() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => heard.note(buf.get(..n).unwrap_or_default()),
        }
    }
}

/// The server refused the connection with a status line in plain text, before the
/// handshake: its message ([`Heard::failed`]), an [`Error::Server`] once connecting fails
/// with it ([`connect_error`]).
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server refused the connection: {}", self.0)
    }
}

impl std::error::Error for Refused {}

impl Heard {
    /// Keeps what `bytes` adds to the first [`HEARD`] bytes.
    pub(crate) fn note(&mut self, bytes: &[u8]) {
        let room = HEARD.saturating_sub(self.0.len()).min(bytes.len());
        self.0
            .extend_from_slice(bytes.get(..room).unwrap_or_default());
    }

    /// The server began a line of plain text (a status line's capital letters) and its
    /// line end has not come: rustls fails on a record's first five bytes, and a line
    /// arriving in two reads (through something that cuts the bytes apart) was taken for
    /// a corrupt record (an outside review).
    pub(crate) fn line_unfinished(&self) -> bool {
        self.0.first().is_some_and(u8::is_ascii_uppercase)
            && self.0.len() < HEARD
            && !self.0.windows(2).any(|w| w == b"\r\n")
            && self
                .0
                .iter()
                .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r')
    }

    /// The first line heard, when the server spoke plain text where a TLS record was due:
    /// printable ASCII up to its `\r\n` (a record begins with a content type byte, 20 to 24,
    /// which no text does).
    fn plain_line(&self) -> Option<&str> {
        let end = self.0.windows(2).position(|w| w == b"\r\n")?;
        let line = self.0.get(..end)?;
        if line.is_empty() || !line.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return None;
        }
        std::str::from_utf8(line).ok()
    }

    /// The error of a handshake that failed on `e`: the server's refusal when it sent one
    /// in plain text ([`Refused`]), a plain-text port named as one, else `e`.
    pub(crate) fn failed(&self, e: rustls::Error) -> io::Error {
        match self.plain() {
            Some(plain) => plain,
            None => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }

    /// The error of a handshake the server closed: as [`Heard::failed`] when it said
    /// something in plain text first.
    pub(crate) fn closed(&self) -> io::Error {
        self.plain().unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the TLS handshake",
            )
        })
    }

    fn plain(&self) -> Option<io::Error> {
        let line = self.plain_line()?;
        Some(match parse_status(line.as_bytes()) {
            // memcached's refusal at its connection limit only: any other line (a proxy's
            // `SERVER_ERROR`) says that this port does not speak TLS, a connect error the
            // cluster counts against the server (an outside review).
            Ok(Status::ServerError(message))
                if message.starts_with(crate::proto::TOO_MANY_CONNECTIONS) =>
            {
                io::Error::new(io::ErrorKind::ConnectionRefused, Refused(message))
            }
            _ => io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the server answered the TLS handshake in plain text ({line:?}): this port does not speak TLS (memcached takes TLS on the ports it is given with -Z)"
                ),
            ),
        })
    }
}

/// Reads from the socket (`.0`), noting the first bytes in `.1`.
pub(crate) struct Hearing<'a, R: Read>(pub(crate) R, pub(crate) &'a mut Heard);

impl<R: Read> Read for Hearing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.note(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// The error of a connect to `server` that failed with `source`: the server's own error
/// when it refused the connection in plain text ([`Refused`]), else a connect error.
pub(crate) fn connect_error(server: String, source: io::Error) -> Error {
    match source.get_ref().and_then(|e| e.downcast_ref::<Refused>()) {
        Some(Refused(message)) => Error::Server {
            server,
            message: message.clone(),
        },
        None => Error::Connect { server, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(bytes: &[u8]) -> Heard {
        let mut heard = Heard::default();
        for chunk in bytes.chunks(7) {
            heard.note(chunk);
        }
        heard
    }

    #[test]
    fn a_refusal_in_plain_text_is_the_servers_error() {
        let e = heard(b"ERROR Too many open connections\r\n").failed(rustls::Error::DecryptError);
        let Error::Server { message, .. } = connect_error("s".into(), e) else {
            panic!("not the server's error");
        };
        assert!(message.contains("connection limit"), "{message}");
    }

    #[test]
    fn other_plain_text_names_a_port_without_tls() {
        for bytes in [
            &b"ERROR\r\n"[..],
            b"CLIENT_ERROR line too long\r\n",
            b"SERVER_ERROR proxy backend unavailable\r\n",
        ] {
            let e = heard(bytes).closed();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("does not speak TLS"), "{e}");
            assert!(matches!(
                connect_error("s".into(), e),
                Error::Connect { .. }
            ));
        }
    }

    #[test]
    fn records_and_unfinished_lines_keep_the_tls_error() {
        let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
        let half_line = b"ERROR Too many open conn";
        for bytes in [&record[..], half_line, b""] {
            let e = heard(bytes).failed(rustls::Error::DecryptError);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{bytes:?}");
            assert!(e.to_string().contains("ecrypt"), "{e}");
        }
        let e = heard(b"").closed();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_line_begun_in_plain_text_is_read_on_to_its_end() {
        assert!(heard(b"ERROR Too many open").line_unfinished());
        assert!(heard(b"ERR").line_unfinished());
        assert!(heard(b"ERROR Too many open connections\r").line_unfinished());
        assert!(!heard(b"ERROR Too many open connections\r\n").line_unfinished());
        assert!(!heard(&[0x15, 0x03, 0x03, 0x00, 0x02]).line_unfinished());
        assert!(!heard(b"").line_unfinished());
        assert!(!heard(&[b'E'; HEARD]).line_unfinished());
    }

    #[test]
    fn only_the_first_bytes_are_kept() {
        let mut heard = Heard::default();
        heard.note(&[b'x'; 200]);
        heard.note(&[b'y'; 200]);
        assert_eq!(heard.0.len(), HEARD);
    }
}

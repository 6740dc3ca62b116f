//! TLS (feature `tls`): rustls with the `ring` provider, servers verified against a CA file.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;

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
        match conn.read_tls(&mut socket) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the TLS handshake",
                ))
            }
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
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    socket.set_read_timeout(Some(read_timeout))?;
    Ok(StreamOwned::new(conn, socket))
}

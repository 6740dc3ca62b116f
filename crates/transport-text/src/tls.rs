//! TLS (feature `tls`): rustls with the `ring` provider, servers verified against a CA file.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

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

/// The TLS handshake on a connected socket (whose read and write timeouts bound each step),
/// given up at `deadline`. A certificate that does not verify is an error of kind
/// `InvalidData` whose source is the [`rustls::Error`].
pub(crate) fn handshake(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    mut socket: Socket,
    deadline: Instant,
) -> io::Result<StreamOwned<ClientConnection, Socket>> {
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake did not finish in time",
            ));
        }
        match conn.complete_io(&mut socket) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(StreamOwned::new(conn, socket))
}

//! The transport a configuration names, built: text, libmemcached or memory, each behind
//! its feature (asking for one not built in is an error, never a fallback).

use std::sync::Arc;

use newcache_transport::Transport;

#[cfg(feature = "text")]
use super::url::parse_server;
#[cfg(feature = "text")]
use super::WireProtocol;
use super::{bad, Config, TransportKind};
use crate::error::Result;

pub(super) fn build_transport(config: &Config) -> Result<Arc<dyn Transport>> {
    match config.transport {
        TransportKind::Text => build_text(config),
        TransportKind::Memory => build_memory(config),
        TransportKind::Libmemcached { binary } => build_libmemcached(config, binary),
    }
}

#[cfg(feature = "binary")]
pub(super) fn build_libmemcached(config: &Config, binary: bool) -> Result<Arc<dyn Transport>> {
    use newcache_transport_binary::{Behaviors, BinaryConfig, BinaryTransport};
    // The cache's timeouts, unless behaviors name libmemcached's own.
    let mut behaviors = Behaviors {
        connect_timeout: Some(config.connect_timeout),
        poll_timeout: Some(config.read_timeout.max(config.write_timeout)),
        ..Behaviors::default()
    };
    for (name, value) in &config.behaviors {
        behaviors.set(name, value).map_err(bad)?;
    }
    let transport = BinaryTransport::new(BinaryConfig {
        servers: config.servers.clone(),
        binary_protocol: binary,
        behaviors,
        username: config.username.clone(),
        password: config.password.as_ref().map(|p| p.0.clone()),
        // Each handle holds at most one connection per server: `max_connections` handles
        // bound the connections per server as the text transport's cap does (the pool
        // used to be `max_idle`, 16, and 64 threads under one hung server starved the
        // healthy keys waiting for a handle; an outside audit).
        pool_size: match config.max_connections {
            0 => usize::MAX,
            n => n,
        },
        idle_timeout: config.idle_timeout,
        item_size_limit: config.item_size_limit,
    })?;
    Ok(Arc::new(transport))
}

#[cfg(not(feature = "binary"))]
pub(super) fn build_libmemcached(_: &Config, binary: bool) -> Result<Arc<dyn Transport>> {
    Err(bad(format_args!(
        "{} asks for libmemcached, but this build of newcache lacks the `binary` feature; enable it in Cargo.toml (newcache = {{ features = [\"binary\"] }}); newcache never falls back to another transport silently",
        if binary { "binary=true" } else { "transport=libmemcached" }
    )))
}

#[cfg(feature = "text")]
pub(super) fn build_text(config: &Config) -> Result<Arc<dyn Transport>> {
    let transport = newcache_transport_text::TextTransport::new(text_config(config)?)
        .map_err(settings_error)?;
    Ok(Arc::new(transport))
}

/// What the text transport's constructor refused: it connects to nothing, so a failure is
/// the settings' (a TLS file that cannot be read or holds no certificate or key), an
/// [`Error::Config`] saying what is wrong, not a connection failure ("is it running and
/// reachable?", counted with connect errors; an outside audit).
#[cfg(feature = "text")]
pub(super) fn settings_error(e: newcache_transport::Error) -> crate::Error {
    match e {
        newcache_transport::Error::Connect { source, .. } => bad(source),
        other => other.into(),
    }
}

/// The text transport's settings, from the cache's (both drivers take them).
#[cfg(feature = "text")]
pub(super) fn text_config(config: &Config) -> Result<newcache_transport_text::TextConfig> {
    use newcache_transport_text::TextConfig;
    let servers = config
        .servers
        .iter()
        .map(|s| parse_server(s))
        .collect::<Result<Vec<_>>>()?;
    let mut text = TextConfig {
        servers,
        connect_timeout: config.connect_timeout,
        read_timeout: config.read_timeout,
        write_timeout: config.write_timeout,
        max_idle_per_server: config.max_idle_per_server,
        item_size_limit: config.item_size_limit,
        max_connections: config.max_connections,
        async_connections: config.async_connections,
        async_queue: config.async_queue,
        idle_timeout: config.idle_timeout,
        protocol: match config.protocol {
            WireProtocol::Auto => newcache_transport_text::Protocol::Auto,
            WireProtocol::Meta => newcache_transport_text::Protocol::Meta,
            WireProtocol::Classic => newcache_transport_text::Protocol::Classic,
        },
        tls: match (config.tls, &config.tls_ca) {
            (true, Some(ca)) => Some(newcache_transport_text::TlsConfig {
                ca_file: ca.clone(),
                cert_file: config.tls_cert.clone(),
                key_file: config.tls_key.clone(),
                server_name: config.tls_server_name.clone(),
            }),
            (true, None) => return Err(bad("tls=true needs tls_ca")),
            (false, _) => None,
        },
        ..TextConfig::default()
    };
    for (name, value) in &config.behaviors {
        text.set_behavior(name, value).map_err(|e| {
            bad(format_args!(
                "behaviors.{name} with the text transport: {e}"
            ))
        })?;
    }
    Ok(text)
}

/// The async cache's transport: the text protocol's tokio driver, or the memory backend.
#[cfg(feature = "tokio")]
pub(super) fn build_async_transport(
    config: &Config,
) -> Result<Arc<dyn newcache_transport::AsyncTransport>> {
    match config.transport {
        #[cfg(feature = "text")]
        TransportKind::Text => Ok(Arc::new(
            newcache_transport_text::TokioTextTransport::new(text_config(config)?)
                .map_err(settings_error)?,
        )),
        #[cfg(not(feature = "text"))]
        TransportKind::Text => Err(bad(
            "the text transport needs the `text` feature of newcache (on by default)",
        )),
        #[cfg(feature = "memory")]
        TransportKind::Memory => Ok(Arc::new(
            newcache_transport::MemoryTransport::with_item_size_limit(config.item_size_limit),
        )),
        #[cfg(not(feature = "memory"))]
        TransportKind::Memory => Err(bad(
            "transport=memory needs the `memory` feature of newcache",
        )),
        TransportKind::Libmemcached { .. } => Err(bad(
            "an AsyncCache cannot use libmemcached, whose calls block a thread; use the text transport (transport=text, the default: its async driver pipelines requests) or a blocking Cache",
        )),
    }
}

#[cfg(not(feature = "text"))]
pub(super) fn build_text(_: &Config) -> Result<Arc<dyn Transport>> {
    Err(bad(
        "the text transport needs the `text` feature of newcache (on by default)",
    ))
}

#[cfg(feature = "memory")]
pub(super) fn build_memory(config: &Config) -> Result<Arc<dyn Transport>> {
    Ok(Arc::new(
        newcache_transport::MemoryTransport::with_item_size_limit(config.item_size_limit),
    ))
}

#[cfg(not(feature = "memory"))]
pub(super) fn build_memory(_: &Config) -> Result<Arc<dyn Transport>> {
    Err(bad(
        "transport=memory needs the `memory` feature of newcache",
    ))
}

//! Building a [`BinaryTransport`] from a [`BinaryConfig`], what its configured handle says
//! (placement, behaviors), and lending a pooled handle to a request.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libmemcached_sys::*;
use newcache_transport::{check_key, Error, IdleReaper, Result};

use crate::admission::Admission;
use crate::config::{parse_server, ServerSpec};
use crate::copy::c_string;
use crate::errors::{invalid, message, out_of_memory, BACKEND};
use crate::health::Health;
use crate::pool::{self, add_server, Checkout, Handle, Pool};
use crate::{
    BehaviorError, Behaviors, BinaryConfig, BinaryTransport, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POLL_TIMEOUT,
};

/// The index in `servers` of the server at each position of `h`'s list.
fn positions(h: &Handle, servers: &[ServerSpec]) -> Result<Vec<usize>> {
    // SAFETY: h is the live master handle, used by this thread only.
    let count = unsafe { memcached_server_count(h.as_ptr()) };
    (0..count)
        .map(|p| {
            // SAFETY: p is below the server count, so the instance is a live one of h; its
            // name is copied at once.
            let (host, port) = unsafe {
                let server = memcached_server_instance_by_position(h.as_ptr(), p);
                if server.is_null() {
                    (String::new(), 0)
                } else {
                    (
                        c_string(memcached_server_name(server)),
                        memcached_server_port(server),
                    )
                }
            };
            servers
                .iter()
                .position(|s| s.host == host && s.port == port)
                .ok_or_else(|| {
                    invalid(format!(
                        "libmemcached lists server {host}:{port}, which is not configured"
                    ))
                })
        })
        .collect()
}

impl BinaryTransport {
    /// Configures the transport. Connects to nothing: servers are resolved and connected on
    /// first use, so this never blocks on a server.
    ///
    /// Fails with [`Error::NoServers`] for an empty server list, and with
    /// [`Error::Backend`] (libmemcached's message and code) for a malformed server entry, a
    /// behavior libmemcached refuses (e.g. `verify_keys` in binary mode, as in pylibmc), SASL
    /// without the binary protocol, or a zero `pool_size`.
    pub fn new(config: BinaryConfig) -> Result<Self> {
        if config.servers.is_empty() {
            return Err(Error::NoServers);
        }
        if config.pool_size == 0 {
            return Err(invalid(
                "pool_size is 0; the transport needs at least one libmemcached handle".into(),
            ));
        }
        let servers = config
            .servers
            .iter()
            .map(|s| parse_server(s).map_err(|why| invalid(format!("server {s:?}: {why}"))))
            .collect::<Result<Vec<_>>>()?;

        // The behaviors as given first, so that a refused one is named as given (a zero
        // `_poll_timeout` would otherwise be reported as the `send_timeout` taken from it).
        config
            .behaviors
            .settings()
            .map_err(|e| invalid(format!("{e}")))?;
        let mut behaviors = config.behaviors.clone();
        behaviors
            .connect_timeout
            .get_or_insert(DEFAULT_CONNECT_TIMEOUT);
        let poll = *behaviors.poll_timeout.get_or_insert(DEFAULT_POLL_TIMEOUT);
        // Sockets are non-blocking and libmemcached waits in poll() with the poll timeout;
        // SO_SNDTIMEO/SO_RCVTIMEO get the same value so that no blocking path can wait
        // longer.
        behaviors.send_timeout.get_or_insert(poll);
        behaviors.receive_timeout.get_or_insert(poll);
        behaviors.cas.get_or_insert(true);
        behaviors.tcp_nodelay.get_or_insert(true);
        let settings = behaviors.settings().map_err(|e| invalid(format!("{e}")))?;
        let failure_limit = behaviors
            .failure_limit
            .unwrap_or(MEMCACHED_SERVER_FAILURE_LIMIT as u32);
        let remove_failed =
            behaviors.remove_failed.is_some_and(|n| n > 0) || behaviors.auto_eject == Some(true);
        // libmemcached leaves a server alone after its first failed connect (its
        // server_timeout_limit is 0); here only after failure_limit failed connects in a
        // row, and never the only server. With remove_failed its own rules stay: they
        // decide when it ejects a server, and so where keys go.
        let server_timeout_limit = if servers.len() == 1 {
            u64::from(u32::MAX)
        } else if remove_failed {
            0
        } else {
            u64::from(failure_limit)
        };

        let master = Handle::create().ok_or_else(|| out_of_memory("a handle"))?;
        let m = master.as_ptr();

        // pylibmc's order: SASL, protocol, behaviors, servers.
        match (&config.username, &config.password) {
            (None, None) => {}
            (Some(user), Some(password)) => {
                if !config.binary_protocol {
                    return Err(invalid(
                        "SASL authentication needs the binary protocol; set binary_protocol to true".into(),
                    ));
                }
                let user = CString::new(user.as_str())
                    .map_err(|_| invalid("the SASL username contains a NUL byte".into()))?;
                let password = CString::new(password.as_str())
                    .map_err(|_| invalid("the SASL password contains a NUL byte".into()))?;
                // SAFETY: m is the live master handle, owned here; libmemcached copies both
                // NUL-terminated strings, which outlive the call.
                let rc =
                    unsafe { memcached_set_sasl_auth_data(m, user.as_ptr(), password.as_ptr()) };
                if memcached_failed(rc) {
                    return Err(Error::Backend {
                        backend: BACKEND,
                        code: rc as i32,
                        message: format!("memcached_set_sasl_auth_data: {}", message(&master, rc)),
                    });
                }
            }
            _ => {
                return Err(invalid(
                    "SASL needs both a username and a password; give both or neither".into(),
                ))
            }
        }

        let protocol = [(
            "binary",
            MEMCACHED_BEHAVIOR_BINARY_PROTOCOL,
            u64::from(config.binary_protocol),
            u8::from(config.binary_protocol).to_string(),
        )];
        let internal = [(
            "server_timeout_limit",
            MEMCACHED_BEHAVIOR_SERVER_TIMEOUT_LIMIT,
            server_timeout_limit,
            server_timeout_limit.to_string(),
        )];
        let all = protocol
            .into_iter()
            .chain(
                settings
                    .into_iter()
                    .map(|s| (s.name, s.flag, s.raw, s.shown)),
            )
            .chain(internal);
        for (name, flag, raw, shown) in all {
            // SAFETY: m is the live master handle, used by this thread only.
            let rc = unsafe { memcached_behavior_set(m, flag, raw) };
            if memcached_failed(rc) {
                return Err(Error::Backend {
                    backend: BACKEND,
                    code: rc as i32,
                    message: format!(
                        "libmemcached refused behavior {name} = {shown}: {}",
                        message(&master, rc)
                    ),
                });
            }
        }

        for spec in &servers {
            let host = CString::new(spec.host.as_str())
                .map_err(|_| invalid(format!("server {:?}: NUL byte in the host", spec.label)))?;
            let rc = add_server(&master, &host, spec.port, spec.weight);
            if memcached_failed(rc) {
                return Err(Error::Backend {
                    backend: BACKEND,
                    code: rc as i32,
                    message: format!("cannot add server {}: {}", spec.label, message(&master, rc)),
                });
            }
        }

        // The timeouts as libmemcached holds them (in ms and s), which is what errors report.
        // SAFETY: m is the live master handle, used by this thread only; reading these
        // behaviors does no I/O.
        let (connect_timeout, poll_timeout, retry_timeout, dead_timeout) = unsafe {
            (
                memcached_behavior_get(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT),
                memcached_behavior_get(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT),
                memcached_behavior_get(m, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT),
                memcached_behavior_get(m, MEMCACHED_BEHAVIOR_DEAD_TIMEOUT),
            )
        };
        let position_to_server = positions(&master, &servers)?;
        let servers_count = servers.len();
        let retry_timeout = Duration::from_secs(retry_timeout);
        Ok(BinaryTransport {
            pool: Arc::new(Pool::new(master, config.pool_size, config.idle_timeout)),
            idle_timeout: config.idle_timeout,
            reaper: IdleReaper::default(),
            health: Health::new(servers.len(), failure_limit, retry_timeout, remove_failed),
            item_size_max: servers.iter().map(|_| Default::default()).collect(),
            servers,
            binary: config.binary_protocol,
            item_size_limit: config.item_size_limit,
            connect_timeout: Duration::from_millis(connect_timeout),
            poll_timeout: Duration::from_millis(poll_timeout),
            retry_timeout,
            dead_timeout: Duration::from_secs(dead_timeout),
            auth_failed: Mutex::new(BTreeSet::new()),
            admission: Admission::new(
                servers_count,
                config.binary_protocol && config.username.is_none(),
            ),
            position_to_server,
        })
    }

    /// The server libmemcached places `key` on, as `(host, port)` with the host as
    /// configured: the placement oracle, from `memcached_server_by_key` on the configured
    /// handle (so it ignores servers a pooled handle has ejected under `remove_failed`).
    /// No I/O.
    pub fn server_for_key(&self, key: &[u8]) -> Result<(String, u16)> {
        check_key(key)?;
        self.pool.with_master(|h| {
            let mut rc = MEMCACHED_SUCCESS;
            // SAFETY: h is the master handle, used under the pool lock only; the key buffer
            // outlives the call and rc is a valid out pointer.
            let server = unsafe {
                memcached_server_by_key(h.as_ptr(), key.as_ptr().cast(), key.len(), &mut rc)
            };
            if server.is_null() {
                let label = self.all_servers();
                return Err(self.error(h, rc, label, "server_by_key"));
            }
            // SAFETY: server is a live instance of h; its name is copied at once.
            Ok(unsafe {
                (
                    c_string(memcached_server_name(server)),
                    memcached_server_port(server),
                )
            })
        })
    }

    /// The index in [`BinaryConfig::servers`] of the server `key` is placed on (see
    /// [`BinaryTransport::server_for_key`]).
    pub fn server_index_for_key(&self, key: &[u8]) -> Result<usize> {
        let (host, port) = self.server_for_key(key)?;
        self.servers
            .iter()
            .position(|s| s.host == host && s.port == port)
            .ok_or_else(|| Error::Backend {
                backend: BACKEND,
                code: MEMCACHED_FAILURE as i32,
                message: format!(
                    "libmemcached placed the key on {host}:{port}, which is not configured"
                ),
            })
    }

    /// The value libmemcached holds for a behavior (`memcached_behavior_get` on the
    /// configured handle), by pylibmc's name: what the configuration really produced,
    /// e.g. `hash` stays 0 (one-at-a-time) after `ketama`.
    pub fn behavior(&self, name: &str) -> std::result::Result<u64, BehaviorError> {
        let name = if name == "_retry_timeout" {
            "retry_timeout"
        } else {
            name
        };
        let flag = match name {
            "binary" => MEMCACHED_BEHAVIOR_BINARY_PROTOCOL,
            n => Behaviors::flag(n).ok_or_else(|| BehaviorError::Unknown {
                name: n.to_string(),
            })?,
        };
        if matches!(
            flag,
            MEMCACHED_BEHAVIOR_SOCKET_SEND_SIZE | MEMCACHED_BEHAVIOR_SOCKET_RECV_SIZE
        ) {
            return Err(BehaviorError::Unsupported {
                name: name.to_string(),
                reason: "libmemcached connects to a server to read it",
            });
        }
        // SAFETY: the master handle is used under the pool lock only; flag is a behavior
        // that memcached_behavior_get reads without I/O.
        Ok(self
            .pool
            .with_master(|h| unsafe { memcached_behavior_get(h.as_ptr(), flag) }))
    }

    /// Every behavior [`BinaryTransport::behavior`] can read, by pylibmc's name (and
    /// `binary`), with the value libmemcached holds on the configured handle: for tests and
    /// tools that check what a configuration (builder, URL) really set. `_socket_send_size`
    /// and `_socket_recv_size` are left out: libmemcached connects to a server to read them.
    /// No I/O.
    pub fn behaviors_in_effect(&self) -> BTreeMap<&'static str, u64> {
        std::iter::once("binary")
            .chain(Behaviors::NAMES.iter().copied())
            .filter_map(|name| Some((name, self.behavior(name).ok()?)))
            .collect()
    }

    /// A handle for this request, within the request's poll timeout: a thread that finds
    /// every handle lent out (they may all be waiting on a hung server) waits in line for
    /// one at most three quarters of the poll timeout, else fails with [`Error::Timeout`]
    /// naming every server, and the request then gets what is left of it (a quarter at
    /// least, so a healthy server still has time to answer, and a timeout still says the
    /// server is slow), so waiting for a handle and then for a reply takes no longer than
    /// one poll timeout. Connections with bytes no request asked for are dropped first
    /// ([`BinaryTransport::drop_stale_connections`]).
    /// Starts the thread that drops handles idle past the idle timeout (once, with the
    /// first request, when the timeout is not zero; it stops when the transport is dropped).
    fn start_reaper(&self) {
        if self.idle_timeout.is_zero() {
            return;
        }
        let tick = (self.idle_timeout / 4).max(Duration::from_millis(5));
        self.reaper.start(
            "newcache-idle",
            tick,
            Arc::downgrade(&self.pool),
            Pool::close_expired,
        );
    }

    pub(crate) fn lease(&self) -> Result<pool::Lease<'_>> {
        self.start_reaper();
        let lease = match self.pool.checkout(self.poll_timeout * 3 / 4) {
            Ok(lease) => lease,
            Err(Checkout::NoHandle) => {
                return Err(out_of_memory(
                    "a handle clone placing keys as the configured handle",
                ))
            }
            Err(Checkout::Busy) => {
                return Err(Error::Timeout {
                    server: self.all_servers(),
                    after: self.poll_timeout * 3 / 4,
                })
            }
        };
        let shortened = lease
            .waited()
            .filter(|&w| w >= Duration::from_millis(1))
            .map(|w| {
                self.poll_timeout
                    .saturating_sub(w)
                    .max(Duration::from_millis(1))
            });
        lease.set_poll_timeout(shortened, self.poll_timeout);
        self.drop_stale_connections(&lease);
        lease.begin();
        Ok(lease)
    }

    /// The poll timeout of the request on `h`: the transport's, or what a wait for the
    /// handle left of it.
    pub(crate) fn poll_of(&self, h: &Handle) -> Duration {
        h.shortened_poll().unwrap_or(self.poll_timeout)
    }
}

//! `stats`: every server's statistics, through the callback that collects them; a server
//! that answered none is listed with its failure.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use libmemcached_sys::*;
use newcache_transport::{Error, Result, ServerStats};

use crate::config::ServerSpec;
use crate::copy::{c_bytes, c_string};
use crate::errors::BACKEND;
use crate::pool::Handle;
use crate::BinaryTransport;

/// A server's `stats` under way on a thread, or decided without one.
enum Asked<'scope> {
    Done(Result<ServerStats>),
    Running(std::thread::ScopedJoinHandle<'scope, Result<ServerStats>>),
}

struct StatsContext {
    servers: Vec<((String, u16), BTreeMap<String, String>)>,
}

/// `memcached_stat_fn` collecting every statistic of every server.
unsafe extern "C" fn collect_stat(
    server: *const memcached_instance_st,
    key: *const c_char,
    key_length: usize,
    value: *const c_char,
    value_length: usize,
    context: *mut c_void,
) -> memcached_return_t {
    // A panic must not unwind into C; none is expected, and one would only lose a statistic.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: libmemcached passes the live server and key/value buffers of the given
        // lengths for the duration of the call, and `context` is the &mut StatsContext
        // `stats()` handed to memcached_stat_execute, alive and unaliased until it returns.
        let (name, port, key, value, ctx) = unsafe {
            (
                c_string(memcached_server_name(server)),
                memcached_server_port(server),
                String::from_utf8_lossy(&c_bytes(key, key_length)).into_owned(),
                String::from_utf8_lossy(&c_bytes(value, value_length)).into_owned(),
                &mut *context.cast::<StatsContext>(),
            )
        };
        let id = (name, port);
        match ctx.servers.iter_mut().find(|(s, _)| *s == id) {
            Some((_, stats)) => {
                stats.insert(key, value);
            }
            None => ctx.servers.push((id, BTreeMap::from([(key, value)]))),
        }
    }));
    MEMCACHED_SUCCESS
}

/// Runs `stats` on every server of `h`, collecting what each answered.
fn stats_execute(h: &Handle) -> (memcached_return_t, StatsContext) {
    stats_group(h, None)
}

/// Runs `stats <group>` (`stats` without one) on every server of `h`, collecting what each
/// answered.
fn stats_group(h: &Handle, group: Option<&CStr>) -> (memcached_return_t, StatsContext) {
    let mut context = StatsContext {
        servers: Vec::new(),
    };
    // SAFETY: h is a live handle used by this thread only; collect_stat matches
    // memcached_stat_fn and gets a pointer to `context`, which outlives the call and is not
    // touched by anything else meanwhile; `group` is NUL-terminated and outlives the call
    // (NULL args mean plain `stats`).
    let rc = unsafe {
        memcached_stat_execute(
            h.as_ptr(),
            group.map_or(ptr::null(), CStr::as_ptr),
            Some(collect_stat),
            (&mut context as *mut StatsContext).cast(),
        )
    };
    (rc, context)
}

impl BinaryTransport {
    /// The `item_size_max` (memcached's `-I`) server `index` reports in its `stats
    /// settings`, asked on a handle of its own made from `h`; `None` when it does not
    /// answer.
    pub(crate) fn item_size_max_of(&self, h: &Handle, index: usize) -> Option<usize> {
        let spec = self.servers.get(index)?;
        let host = CString::new(spec.host.as_str()).ok()?;
        let one = h.alone(&host, spec.port, spec.weight)?;
        let (rc, mut context) = stats_group(&one, Some(c"settings"));
        if memcached_failed(rc) {
            return None;
        }
        let (_, stats) = context.servers.pop()?;
        ServerStats::answered(spec.label.clone(), stats).item_size_max()
    }

    /// Every server's statistics, in the configured order. One server is asked on a pooled
    /// handle; several are asked at once, each on a handle of its own (a copy of the
    /// configured one's behaviors and credentials) and a thread of its own, so that a hung
    /// server costs the call one read timeout, however many there are, and the others'
    /// statistics still come (the failed one listed with its failure). libmemcached's
    /// `stats` of all servers asks each for its version first and stops at the first that
    /// fails, so asking alone after it cost a hung server a second read timeout (an
    /// outside audit: 1 s at 500 ms).
    pub(crate) fn stats_of_all(&self) -> Result<Vec<ServerStats>> {
        if self.servers.len() > 1 {
            return self.stats_each_alone();
        }
        let h = self.lease()?;
        let (rc, mut context) = stats_execute(&h);
        if memcached_failed(rc) && context.servers.is_empty() {
            return Err(self.error(&h, rc, self.label_for_failure(&h), "stats"));
        }
        let mut out = Vec::with_capacity(self.servers.len());
        for spec in &self.servers {
            let id = (spec.host.clone(), spec.port);
            match context.servers.iter_mut().find(|(s, _)| *s == id) {
                Some((_, stats)) => out.push(ServerStats::answered(
                    spec.label.clone(),
                    std::mem::take(stats),
                )),
                None => match self.server_failure(&h, spec, "stats") {
                    e if e.is_server_failure() => {
                        out.push(ServerStats::failed(spec.label.clone(), e));
                    }
                    e => return Err(e),
                },
            }
        }
        self.check_leftovers(&h)?;
        ServerStats::all_or_first_failure(out)
    }

    /// `stats` of each server at once, each on a handle and a thread of its own; a server
    /// marked down is not asked.
    fn stats_each_alone(&self) -> Result<Vec<ServerStats>> {
        let master = self.lease()?;
        // Made here: a handle is cloned from the master on the master's thread.
        let mut asks = Vec::with_capacity(self.servers.len());
        for (index, spec) in self.servers.iter().enumerate() {
            if let Err(e) = self.gate(index) {
                asks.push(Err(e));
                continue;
            }
            let host = CString::new(spec.host.as_str()).map_err(|_| Error::Backend {
                backend: BACKEND,
                code: MEMCACHED_FAILURE as i32,
                message: format!("server {}: NUL byte in the host", spec.label),
            })?;
            let Some(one) = master.alone(&host, spec.port, spec.weight) else {
                return Err(Error::Backend {
                    backend: BACKEND,
                    code: MEMCACHED_MEMORY_ALLOCATION_FAILURE as i32,
                    message: format!(
                        "cannot make a handle to ask {} for its statistics",
                        spec.label
                    ),
                });
            };
            asks.push(Ok(one));
        }
        drop(master);
        let answers: Vec<Result<ServerStats>> = std::thread::scope(|scope| {
            let asked: Vec<_> = asks
                .into_iter()
                .zip(&self.servers)
                .map(|(ask, spec)| match ask {
                    Err(down) => Asked::Done(Ok(ServerStats::failed(spec.label.clone(), down))),
                    Ok(one) => match std::thread::Builder::new()
                        .name("newcache-stats".into())
                        .spawn_scoped(scope, move || self.stats_alone(&one, spec))
                    {
                        Ok(thread) => Asked::Running(thread),
                        Err(e) => Asked::Done(Err(Error::Backend {
                            backend: BACKEND,
                            code: MEMCACHED_FAILURE as i32,
                            message: format!(
                                "cannot start a thread to ask {} for its statistics: {e}",
                                spec.label
                            ),
                        })),
                    },
                })
                .collect();
            asked
                .into_iter()
                .zip(&self.servers)
                .map(|(asked, spec)| match asked {
                    Asked::Done(answer) => answer,
                    Asked::Running(thread) => thread.join().unwrap_or_else(|_| {
                        Err(Error::Backend {
                            backend: BACKEND,
                            code: MEMCACHED_FAILURE as i32,
                            message: format!("asking {} for its statistics panicked", spec.label),
                        })
                    }),
                })
                .collect()
        });
        let out = answers.into_iter().collect::<Result<Vec<_>>>()?;
        ServerStats::all_or_first_failure(out)
    }

    /// `stats` of `spec`'s server on `one`, a handle of that server alone: its statistics,
    /// or its failure when it is a server's (down, hung).
    fn stats_alone(&self, one: &Handle, spec: &ServerSpec) -> Result<ServerStats> {
        let label = spec.label.clone();
        match stats_execute(one) {
            (rc, mut context) if !memcached_failed(rc) => {
                let stats = context
                    .servers
                    .pop()
                    .map(|(_, stats)| stats)
                    .unwrap_or_default();
                Ok(ServerStats::answered(label, stats))
            }
            (rc, _) => match self.error(one, rc, label.clone(), "stats") {
                e if e.is_server_failure() => Ok(ServerStats::failed(label, e)),
                e => Err(e),
            },
        }
    }

    /// The error libmemcached recorded on one server (which answered nothing).
    pub(crate) fn server_failure(&self, h: &Handle, spec: &ServerSpec, command: &str) -> Error {
        let position = (0..self.position_to_server.len())
            .find(|&p| self.server_at(p).and_then(|i| self.servers.get(i)) == Some(spec));
        match position {
            Some(p) => self.instance_failure(h, p, command),
            None => Error::Backend {
                backend: BACKEND,
                code: MEMCACHED_FAILURE as i32,
                message: format!("{} answered no statistics", spec.label),
            },
        }
    }
}

//! `stats`: the callback that collects every server's statistics, and the error for a
//! server that answered none.

use std::collections::BTreeMap;
use std::os::raw::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use libmemcached_sys::*;
use newcache_transport::Error;

use crate::config::ServerSpec;
use crate::copy::{c_bytes, c_string};
use crate::errors::BACKEND;
use crate::pool::Handle;
use crate::BinaryTransport;

pub(crate) struct StatsContext {
    pub(crate) servers: Vec<((String, u16), BTreeMap<String, String>)>,
}

/// `memcached_stat_fn` collecting every statistic of every server.
pub(crate) unsafe extern "C" fn collect_stat(
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

impl BinaryTransport {
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

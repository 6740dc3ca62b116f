//! A memcached with SASL (`-S`) for tests: a sasldb made with the libsasl2 API and the
//! server started on a free port with `SASL_CONF_PATH` pointing at it. Shared by
//! `crates/transport-binary/tests/sasl.rs` and `tests/tests/binary_url.rs` (included with
//! `#[path]`); it uses only std and `newcache-testkit`.
//!
//! Debian's memcached 1.6.18 is built without `ENABLE_SASL_PWDB`, so the
//! `MEMCACHED_SASL_PWDB` file of `user:password` lines is ignored; it checks passwords with
//! Cyrus SASL, whose default store is a sasldb file. This module makes one with the libsasl2
//! API (what `saslpasswd2` from `sasl2-bin` does, without needing that package): a small C
//! helper compiled here against `libsasl2-dev` (installed with `libmemcached-dev`). It then
//! runs memcached with `SASL_CONF_PATH` pointing at a `memcached.conf` that allows `PLAIN`
//! and names that sasldb. The testkit cannot pass environment variables, hence the small
//! spawner below.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HELPER: &str = r#"
#include <sasl/sasl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *db;

static int getopt_cb(void *ctx, const char *plugin, const char *option,
                     const char **result, unsigned *len) {
    (void)ctx; (void)plugin;
    if (strcmp(option, "sasldb_path") == 0) {
        *result = db;
        if (len) *len = (unsigned)strlen(db);
        return SASL_OK;
    }
    return SASL_FAIL;
}

/* usage: mksasldb DB USER PASSWORD; stores USER in the realm memcached uses (gethostname). */
int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s DB USER PASSWORD\n", argv[0]); return 2; }
    db = argv[1];
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) { perror("gethostname"); return 1; }
    sasl_callback_t cbs[] = {
        {SASL_CB_GETOPT, (int (*)(void))getopt_cb, NULL},
        {SASL_CB_LIST_END, NULL, NULL},
    };
    int r = sasl_server_init(cbs, "newcache-test");
    if (r != SASL_OK) { fprintf(stderr, "sasl_server_init: %s\n", sasl_errstring(r, NULL, NULL)); return 1; }
    sasl_conn_t *conn = NULL;
    r = sasl_server_new("memcached", host, host, NULL, NULL, cbs, 0, &conn);
    if (r != SASL_OK) { fprintf(stderr, "sasl_server_new: %s\n", sasl_errstring(r, NULL, NULL)); return 1; }
    const char *mechs = NULL;
    r = sasl_listmech(conn, NULL, "", " ", "", &mechs, NULL, NULL);
    if (r != SASL_OK || mechs == NULL || strstr(mechs, "PLAIN") == NULL) {
        fprintf(stderr, "the SASL PLAIN mechanism is missing (have: %s); install libsasl2-modules\n",
                mechs ? mechs : "none");
        return 3;
    }
    r = sasl_setpass(conn, argv[2], argv[3], (unsigned)strlen(argv[3]), NULL, 0, SASL_SET_CREATE);
    if (r != SASL_OK) { fprintf(stderr, "sasl_setpass: %s\n", sasl_errdetail(conn)); return 1; }
    sasl_dispose(&conn);
    sasl_done();
    return 0;
}
"#;

/// A fresh directory for this test run.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sasl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// Writes `memcached.conf` and a sasldb holding `user`/`password` into `dir`.
pub fn sasl_config(dir: &Path, user: &str, password: &str) {
    let source = dir.join("mksasldb.c");
    let helper = dir.join("mksasldb");
    std::fs::write(&source, HELPER).unwrap_or_else(|e| panic!("write helper: {e}"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg("-o")
        .arg(&helper)
        .arg(&source)
        .arg("-lsasl2")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        out.status.success(),
        "compiling the sasldb helper failed (needs libsasl2-dev, which libmemcached-dev brings):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = dir.join("sasldb2");
    let out = Command::new(&helper)
        .arg(&db)
        .args([user, password])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the sasldb helper: {e}"));
    assert!(
        out.status.success(),
        "creating the sasldb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        dir.join("memcached.conf"),
        format!("mech_list: plain\nsasldb_path: {}\n", db.display()),
    )
    .unwrap_or_else(|e| panic!("write memcached.conf: {e}"));
}

/// memcached with `-S`, reading its SASL configuration from `dir`; killed on drop.
pub struct SaslMemcached {
    child: Child,
    port: u16,
}

impl SaslMemcached {
    /// A fresh sasldb holding `user`/`password` (in a directory named after `name`) and a
    /// memcached `-S` using it.
    pub fn with_user(name: &str, user: &str, password: &str) -> SaslMemcached {
        let dir = work_dir(name);
        sasl_config(&dir, user, password);
        SaslMemcached::start(&dir)
    }

    pub fn start(dir: &Path) -> SaslMemcached {
        SaslMemcached::start_at(dir, newcache_testkit::free_port(), true)
    }

    /// memcached on `port`, with `-S` when `sasl` (else a plain one, as a server later
    /// restarted with `-S`).
    #[allow(dead_code)]
    pub fn start_at(dir: &Path, port: u16, sasl: bool) -> SaslMemcached {
        let bin = newcache_testkit::memcached_binary()
            .unwrap_or_else(|| panic!("memcached not found; {}", newcache_testkit::INSTALL_HINT));
        let mut cmd = Command::new(bin);
        if sasl {
            cmd.arg("-S");
        }
        cmd.args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-m",
            "16",
        ])
        .env("SASL_CONF_PATH", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.trim_ascii() == b"0")
            .unwrap_or(false);
        if is_root {
            cmd.args(["-u", "root"]);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run memcached: {e}"));
        // With -S memcached speaks no text protocol, so wait for the port to accept.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                panic!("memcached -S exited with {status}: {}", err.trim());
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return SaslMemcached { child, port };
            }
            assert!(
                Instant::now() < deadline,
                "memcached -S did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for SaslMemcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

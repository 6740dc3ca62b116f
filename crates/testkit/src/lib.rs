//! Real memcached servers for tests, benchmarks and the demo.
//!
//! [`Memcached::start`] runs the `memcached` binary on a free loopback port and stops it when
//! dropped. When no memcached is installed it panics with the command that installs one: a
//! test that needs a server fails loudly, it never skips.
//!
//! ```
//! let server = newcache_testkit::Memcached::start();
//! println!("memcached listening on {}", server.addr());
//! let version = server.raw("version\r\n", b"\r\n");
//! assert!(version.starts_with(b"VERSION "));
//! // Dropping `server` stops the process.
//! ```
//!
//! [`proxy::FaultProxy`] sits between a client and a server and tampers with the replies
//! (duplicates, older replies, garbage, truncation, delays, one-byte writes).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![forbid(unsafe_code)]

pub mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The line that installs memcached, printed when it is missing.
pub const INSTALL_HINT: &str =
    "install memcached first: `apt-get install memcached` (Debian/Ubuntu) or `brew install memcached` (macOS), or run `cargo xtask test`, which installs it";

/// Finds the memcached binary: `$MEMCACHED_BIN`, then `PATH`, then `/usr/bin` and
/// `/usr/local/bin`.
pub fn memcached_binary() -> Option<PathBuf> {
    find_binary("MEMCACHED_BIN", "memcached")
}

/// Finds twemproxy: `$NUTCRACKER_BIN`, then `PATH`, then `/usr/sbin` (where Debian puts it).
pub fn nutcracker_binary() -> Option<PathBuf> {
    find_binary("NUTCRACKER_BIN", "nutcracker")
}

fn find_binary(variable: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(variable) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// twemproxy (`nutcracker`) on a free loopback port in front of memcached servers, with a
/// configuration of its own (ketama over the servers, no ejection); killed when dropped.
/// Panics, naming the install command, when nutcracker is not installed.
#[derive(Debug)]
pub struct Twemproxy {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Twemproxy {
    /// Starts twemproxy in front of `backends`.
    pub fn start(backends: &[&Memcached]) -> Twemproxy {
        let bin = nutcracker_binary().unwrap_or_else(|| {
            panic!("nutcracker (twemproxy) not found; install it: `apt-get install nutcracker`, or run `cargo xtask test`, which installs it")
        });
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("newcache-twemproxy-{port}-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            let servers: String = backends
                .iter()
                .map(|m| format!("   - {}:1\n", m.addr()))
                .collect();
            let config = format!(
                "newcache:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 2000\n  auto_eject_hosts: false\n  servers:\n{servers}"
            );
            let conf = dir.join("nutcracker.yml");
            std::fs::write(&conf, config)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
            let stats_port = free_port();
            let child = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
                .arg("-o")
                .arg(dir.join("nutcracker.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut proxy = Twemproxy {
                child: Some(child),
                port,
                dir,
            };
            match proxy.wait_ready() {
                Ok(()) => return proxy,
                Err(e) => last_err = e,
            }
        }
        panic!("twemproxy did not start: {last_err}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log =
                    std::fs::read_to_string(self.dir.join("nutcracker.log")).unwrap_or_default();
                return Err(format!("nutcracker exited with {status}: {}", log.trim()));
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 64];
                if s.write_all(b"version\r\n").is_ok()
                    && matches!(s.read(&mut buf), Ok(n) if buf.get(..n).is_some_and(|b| b.starts_with(b"VERSION")))
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nutcracker did not answer on port {} within 10 s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`, as a server list entry.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Twemproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ports test servers listen on: below Linux's default ephemeral range (32768-60999), so the
/// port of a server a test killed and will restart is never handed to some client socket as
/// its local port meanwhile (with the OS's own choice, port 0, it can be).
const SERVER_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A loopback port that is free right now, from 20000-31999 (below Linux's ephemeral
/// ports), picked at random (so test binaries running side by side rarely try the same one)
/// and checked by binding it.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    // A random start per call: std's RandomState is seeded per process and per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let span = SERVER_PORTS.end - SERVER_PORTS.start;
    let start = (h.finish() % u64::from(span)) as u32;
    for i in 0..span {
        let port = SERVER_PORTS.start + (start + i) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {SERVER_PORTS:?}");
}

/// Runs `script` with Debian's /usr/bin/python3 (where the Python clients are installed:
/// `cargo xtask test` installs python3-pylibmc, python3-pymemcache, python3-memcache and
/// python3-django) and returns what it printed; panics, with its stderr, when it fails.
pub fn python(script: &str) -> String {
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .output()
        .expect("run /usr/bin/python3 (cargo xtask test installs it with the Python clients)");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback address whose connects time out, as a host that is down or cut off does: a
/// listener that never accepts, its accept queue filled by connections of its own, so the
/// kernel drops every further handshake.
pub struct Blackhole {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl Blackhole {
    /// Binds a free port and fills its accept queue; panics when it cannot.
    pub fn start() -> Blackhole {
        let listener = TcpListener::bind(("127.0.0.1", free_port())).expect("bind the blackhole");
        let addr = listener.local_addr().expect("the blackhole's address");
        let mut queued = Vec::new();
        // The queue holds its backlog (128 for std's listener) and one more; stop at the
        // first connect that does not complete.
        while queued.len() < 4096 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(stream) => queued.push(stream),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                Err(e) => panic!("filling the accept queue of {addr}: {e}"),
            }
        }
        assert!(
            queued.len() < 4096,
            "the blackhole's accept queue never filled"
        );
        Blackhole {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}

/// A memcached process listening on 127.0.0.1 (or a unix-domain socket), killed when
/// dropped.
#[derive(Debug)]
pub struct Memcached {
    child: Option<Child>,
    /// The plain-text TCP port (0 for a unix-socket server).
    port: u16,
    args: Vec<String>,
    listen: Listen,
}

/// What a test server listens on besides (or instead of) its plain TCP port.
#[derive(Debug, Clone)]
enum Listen {
    /// Plain TCP on `port`.
    Tcp,
    /// Only a unix-domain socket at this path (memcached's `-s`, which turns TCP off).
    Unix(PathBuf),
    /// TLS on this port (memcached's `-Z`), with the plain port beside it (`notls:`) for
    /// [`Memcached::raw`] and the start-up check.
    Tls {
        port: u16,
        cert: PathBuf,
        key: PathBuf,
        /// With a CA: clients must present a certificate it signed.
        client_ca: Option<PathBuf>,
    },
}

/// Numbers the unix sockets of one test process.
static SOCKETS: AtomicU32 = AtomicU32::new(0);

/// A connection to a test server, TCP or unix-domain.
enum RawConn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl RawConn {
    fn set_read_timeout(&self, t: Duration) -> std::io::Result<()> {
        match self {
            RawConn::Tcp(s) => s.set_read_timeout(Some(t)),
            RawConn::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }
}

impl Read for RawConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            RawConn::Tcp(s) => s.read(buf),
            RawConn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for RawConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            RawConn::Tcp(s) => s.write(buf),
            RawConn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Memcached {
    /// Starts memcached (64 MB, 4 threads) on a free port. Panics, naming the install
    /// command, when memcached is not installed or does not start.
    pub fn start() -> Memcached {
        Memcached::with_args(&[])
    }

    /// Starts memcached with extra command-line arguments (e.g. `["-I", "2m"]`).
    pub fn with_args(args: &[&str]) -> Memcached {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = Memcached {
                child: None,
                port,
                args: args.clone(),
                listen: Listen::Tcp,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("memcached did not start: {last_err}");
    }

    /// Starts memcached listening only on a unix-domain socket (`-s PATH -a 0700`, no TCP),
    /// at a fresh path in the temporary directory ([`Memcached::addr`] is the path; the
    /// socket file is removed when the server is dropped).
    pub fn unix() -> Memcached {
        let n = SOCKETS.fetch_add(1, Ordering::Relaxed);
        Memcached::unix_at(std::env::temp_dir().join(format!(
            "newcache-memcached-{}-{n}.sock",
            std::process::id()
        )))
    }

    /// [`Memcached::unix`] at this path (its directory must exist; a file there is
    /// replaced, and removed when the server is dropped).
    pub fn unix_at(path: PathBuf) -> Memcached {
        let _ = std::fs::remove_file(&path);
        let mut server = Memcached {
            child: None,
            port: 0,
            args: Vec::new(),
            listen: Listen::Unix(path),
        };
        if let Err(e) = server.spawn() {
            panic!("memcached did not start on a unix socket: {e}");
        }
        server
    }

    /// Starts memcached with TLS (`-Z`) on a free port ([`Memcached::tls_addr`]), serving
    /// the certificate chain and key in these PEM files, and plain text on another port
    /// ([`Memcached::addr`], for [`Memcached::raw`]).
    pub fn tls(cert: &Path, key: &Path) -> Memcached {
        Memcached::start_tls(cert, key, None, &[])
    }

    /// [`Memcached::tls`] with more command-line arguments (`-c 20`).
    pub fn tls_with_args(cert: &Path, key: &Path, args: &[&str]) -> Memcached {
        Memcached::start_tls(cert, key, None, args)
    }

    /// [`Memcached::tls`], requiring clients to present a certificate signed by the CA in
    /// the PEM file `client_ca` (`ssl_verify_mode=2`).
    pub fn tls_verifying_clients(cert: &Path, key: &Path, client_ca: &Path) -> Memcached {
        Memcached::start_tls(cert, key, Some(client_ca), &[])
    }

    fn start_tls(cert: &Path, key: &Path, client_ca: Option<&Path>, args: &[&str]) -> Memcached {
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let tls_port = free_port();
            if tls_port == port {
                continue;
            }
            let mut server = Memcached {
                child: None,
                port,
                args: args.iter().map(|a| a.to_string()).collect(),
                listen: Listen::Tls {
                    port: tls_port,
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                    client_ca: client_ca.map(Path::to_path_buf),
                },
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("memcached did not start with TLS: {last_err}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin =
            memcached_binary().unwrap_or_else(|| panic!("memcached not found; {INSTALL_HINT}"));
        let mut cmd = Command::new(&bin);
        match &self.listen {
            Listen::Tcp => {
                cmd.args(["-l", "127.0.0.1", "-p", &self.port.to_string()]);
            }
            Listen::Unix(path) => {
                cmd.arg("-s").arg(path).args(["-a", "0700"]);
            }
            Listen::Tls {
                port,
                cert,
                key,
                client_ca,
            } => {
                let mut options = format!(
                    "ssl_chain_cert={},ssl_key={}",
                    cert.display(),
                    key.display()
                );
                if let Some(ca) = client_ca {
                    options.push_str(&format!(",ssl_verify_mode=2,ssl_ca_cert={}", ca.display()));
                }
                cmd.arg("-Z")
                    .arg("-o")
                    .arg(options)
                    .arg("-l")
                    .arg(format!("127.0.0.1:{port},notls:127.0.0.1:{}", self.port));
            }
        }
        cmd.args(["-U", "0", "-m", "64", "-t", "4", "-c", "1024"]);
        if is_root() {
            // memcached refuses to run as root unless told which user to be.
            cmd.args(["-u", "root"]);
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}; {INSTALL_HINT}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                return Err(format!("memcached exited with {status}: {}", err.trim()));
            }
            let binary_only = self.args.windows(2).any(|a| a == ["-B", "binary"]);
            if ping(&self.listen, self.socket_addr(), child.id(), binary_only) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "memcached did not answer at {} within 10 s",
                    self.addr()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as a server list entry (the plain-text port of a TLS server); the
    /// socket's path for a [`Memcached::unix`] server.
    pub fn addr(&self) -> String {
        match &self.listen {
            Listen::Unix(path) => path.display().to_string(),
            _ => format!("127.0.0.1:{}", self.port),
        }
    }

    /// `127.0.0.1:PORT` of the TLS port of a [`Memcached::tls`] server. Panics for others.
    pub fn tls_addr(&self) -> String {
        match &self.listen {
            Listen::Tls { port, .. } => format!("127.0.0.1:{port}"),
            _ => panic!("memcached at {} was not started with TLS", self.addr()),
        }
    }

    /// The path of a [`Memcached::unix`] server's socket.
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.listen {
            Listen::Unix(path) => Some(path),
            _ => None,
        }
    }

    /// The socket address it listens on.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (as a crash would); the port stays reserved for [`Memcached::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP), as a hung server: connections still open (the kernel
    /// accepts them) but nothing is answered until [`Memcached::resume`].
    pub fn pause(&mut self) {
        self.signal("-STOP");
        // The stop reaches each thread asynchronously: wait until every one is stopped.
        let pid = self.child.as_ref().map(Child::id).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "memcached {pid} did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Thaws a [`Memcached::pause`]d process (SIGCONT).
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .map(|c| c.id())
            .unwrap_or_else(|| panic!("memcached on port {} is not running", self.port));
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill {signal} {pid}: {e}"));
        assert!(status.success(), "kill {signal} {pid} failed: {status}");
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Starts the server again on the same port, empty. Panics if it cannot.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("memcached did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends one raw text-protocol command and returns the raw reply up to and including
    /// `terminator` (e.g. `b"END\r\n"`). For tests that look at the server past any client.
    pub fn raw(&self, command: &str, terminator: &[u8]) -> Vec<u8> {
        let mut s = connect(&self.listen, self.socket_addr(), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("cannot connect to memcached at {}: {e}", self.addr()));
        s.set_read_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
        s.write_all(command.as_bytes())
            .unwrap_or_else(|e| panic!("write to memcached: {e}"));
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(terminator) {
            let n = match s.read(&mut buf) {
                Ok(n) => n,
                // A read with a timeout is not restarted after the process was stopped and
                // continued (a debugger, a profiler attaching): just read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!(
                    "read from memcached at {} after {:?} of {command:?}: {e}",
                    self.addr(),
                    String::from_utf8_lossy(&out)
                ),
            };
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// The server's `stats` as (name, value) pairs.
    pub fn stats(&self) -> Vec<(String, String)> {
        let reply = self.raw("stats\r\n", b"END\r\n");
        String::from_utf8_lossy(&reply)
            .lines()
            .filter_map(|l| {
                let mut parts = l.strip_prefix("STAT ")?.splitn(2, ' ');
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect()
    }

    /// Opens connections to the plain port, each answering `version`, until memcached
    /// refuses one (`ERROR Too many open connections`, past its `-c`): the connections it
    /// took, to keep open while the test needs it at its limit. Panics after `most`.
    pub fn connections_to_the_limit(&self, most: usize) -> Vec<TcpStream> {
        let mut held = Vec::new();
        loop {
            let mut conn = TcpStream::connect(self.socket_addr()).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("read timeout");
            conn.write_all(b"version\r\n").expect("write");
            let mut reply = [0u8; 64];
            let n = conn.read(&mut reply).expect("read");
            let reply = reply.get(..n).unwrap_or_default();
            if reply.starts_with(b"ERROR") {
                return held;
            }
            assert!(reply.starts_with(b"VERSION"), "{reply:?}");
            held.push(conn);
            assert!(held.len() < most, "memcached never refused a connection");
        }
    }

    /// One statistic as a number, e.g. `cmd_get`. Panics when the server lacks it.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats()
            .into_iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("memcached has no numeric stat {name}"))
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.kill();
        if let Listen::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A plain-text connection to a test server: its unix socket, else its plain TCP port.
fn connect(listen: &Listen, addr: SocketAddr, timeout: Duration) -> std::io::Result<RawConn> {
    match listen {
        Listen::Unix(path) => UnixStream::connect(path).map(RawConn::Unix),
        _ => TcpStream::connect_timeout(&addr, timeout).map(RawConn::Tcp),
    }
}

/// True when every thread of process `pid` is stopped (state `T` in /proc). Without /proc,
/// waits a moment and says yes.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        std::thread::sleep(Duration::from_millis(100));
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // The state follows the command name, which is in parentheses.
                let after = stat.rsplit_once(')')?.1;
                after
                    .split_whitespace()
                    .next()
                    .map(|state| state == "T" || state == "t")
            })
            .unwrap_or(true)
    })
}

/// True when the memcached answering at `addr` is the process `pid`: its `stats` name that
/// pid (the text protocol's `STAT pid N`, or with `binary_only` (`-B binary`) the binary
/// protocol's stat packet, key `pid` and value `N` side by side in its body). Another
/// test's server that holds the port (two tests drew the same free port) does not count.
fn ping(listen: &Listen, addr: SocketAddr, pid: u32, binary_only: bool) -> bool {
    let Ok(mut s) = connect(listen, addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Duration::from_millis(500));
    // The binary `stat` request: magic 0x80, opcode 0x10, no key, extras or body.
    let (request, want): (&[u8], String) = match binary_only {
        true => (
            &[
                0x80, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            format!("pid{pid}"),
        ),
        false => (b"stats\r\n", format!("STAT pid {pid}\r\n")),
    };
    if s.write_all(request).is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // The pid whole: in the binary reply a digit must not follow it (pid 123 is not 1234).
    let names_pid = |reply: &[u8]| {
        reply.windows(want.len()).enumerate().any(|(at, w)| {
            w == want.as_bytes()
                && !reply
                    .get(at + want.len())
                    .is_some_and(|b| b.is_ascii_digit())
        })
    };
    while !names_pid(&reply) {
        if !binary_only && reply.ends_with(b"END\r\n") {
            return false;
        }
        match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return false,
            Ok(n) => reply.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    true
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_restarts_on_the_same_port() {
        let mut m = Memcached::start();
        assert!(m.raw("version\r\n", b"\r\n").starts_with(b"VERSION 1."));
        let port = m.port();
        m.raw("set k 0 0 1\r\nv\r\n", b"\r\n");
        m.restart();
        assert_eq!(m.port(), port);
        assert_eq!(m.raw("get k\r\n", b"END\r\n"), b"END\r\n");
        let pid = m.child.as_ref().map(Child::id).unwrap();
        assert!(ping(&Listen::Tcp, m.socket_addr(), pid, false));
        assert!(
            !ping(&Listen::Tcp, m.socket_addr(), pid + 1, false),
            "another process's server is not ours"
        );
        m.kill();
        assert!(!m.is_running());
        assert!(!ping(&Listen::Tcp, m.socket_addr(), pid, false));
    }

    /// A server that takes only the binary protocol is pinged in it: its stats name its
    /// pid, and not another's.
    #[test]
    fn a_binary_only_server_answers_the_binary_ping() {
        let m = Memcached::with_args(&["-B", "binary"]);
        let pid = m.child.as_ref().map(Child::id).unwrap();
        assert!(ping(&Listen::Tcp, m.socket_addr(), pid, true));
        assert!(!ping(&Listen::Tcp, m.socket_addr(), pid + 1, true));
        assert!(!ping(&Listen::Tcp, m.socket_addr(), pid, false));
    }

    #[test]
    fn a_unix_socket_server_answers_at_its_path_and_restarts() {
        let mut m = Memcached::unix();
        let path = m.socket_path().unwrap().to_path_buf();
        assert_eq!(m.addr(), path.display().to_string());
        assert!(m.raw("version\r\n", b"\r\n").starts_with(b"VERSION 1."));
        m.restart();
        assert!(m.raw("version\r\n", b"\r\n").starts_with(b"VERSION 1."));
        drop(m);
        assert!(!path.exists(), "the socket file is removed");
    }
}

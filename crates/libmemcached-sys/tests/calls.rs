//! Calls, against a real memcached, every declaration that nothing else in the workspace
//! calls, so a wrong signature (an argument's width or order, a wrong return type) shows
//! as a wrong result here: incr/decr with an initial value, the parsed `memcached_stat`
//! family, server lists (`memcached_servers_parse`, `memcached_server_push`,
//! `memcached_server_list_free`) and `memcached_destroy_sasl_auth_data`; and the private
//! instance fields `memcached_instance_fields` reads, against the linked library.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::ptr;

use libmemcached_sys::*;
use newcache_testkit::Memcached;

/// One handle, freed on drop.
struct Memc(*mut memcached_st);

impl Memc {
    /// A handle with `servers` added, in binary or text mode.
    fn new(servers: &[&Memcached], binary: bool) -> Memc {
        // SAFETY: a NULL argument asks libmemcached to allocate the handle; Drop frees it.
        let memc = Memc(unsafe { memcached_create(ptr::null_mut()) });
        assert!(!memc.0.is_null(), "memcached_create");
        // SAFETY: memc.0 is a live handle owned here.
        let rc = unsafe {
            memcached_behavior_set(
                memc.0,
                MEMCACHED_BEHAVIOR_BINARY_PROTOCOL,
                u64::from(binary),
            )
        };
        assert_eq!(rc, MEMCACHED_SUCCESS);
        let host = CString::new("127.0.0.1").unwrap();
        for server in servers {
            // SAFETY: memc.0 is live; libmemcached copies the host name.
            let rc = unsafe { memcached_server_add(memc.0, host.as_ptr(), server.port()) };
            assert_eq!(rc, MEMCACHED_SUCCESS);
        }
        memc
    }

    fn strerror(&self, rc: memcached_return_t) -> String {
        // SAFETY: memcached_strerror returns a static NUL-terminated string.
        unsafe { CStr::from_ptr(memcached_strerror(self.0, rc)) }
            .to_string_lossy()
            .into_owned()
    }

    fn set(&self, key: &str, value: &str) -> memcached_return_t {
        // SAFETY: self.0 is live; the key and value buffers outlive the call.
        unsafe {
            memcached_set(
                self.0,
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
                0,
                0,
            )
        }
    }
}

impl Drop for Memc {
    fn drop(&mut self) {
        // SAFETY: the handle came from memcached_create and is freed once, here.
        unsafe { memcached_free(self.0) }
    }
}

/// The value of `key` as memcached holds it, asked past libmemcached.
fn raw_value(server: &Memcached, key: &str) -> Option<String> {
    let reply = server.raw(&format!("get {key}\r\n"), b"END\r\n");
    let text = String::from_utf8_lossy(&reply).into_owned();
    let mut lines = text.split("\r\n");
    lines
        .next()
        .filter(|l| l.starts_with("VALUE "))
        .and_then(|_| lines.next())
        .map(str::to_string)
}

#[test]
fn increment_and_decrement_with_initial_take_64_bit_values_and_an_expiration() {
    let server = Memcached::start();
    let memc = Memc::new(&[&server], true);
    // memcached_increment_with_initial and memcached_decrement_with_initial, called alike.
    type WithInitial = unsafe extern "C" fn(
        *mut memcached_st,
        *const c_char,
        usize,
        u64,
        u64,
        time_t,
        *mut u64,
    ) -> memcached_return_t;
    let call = |f: WithInitial, key: &str, offset: u64, initial: u64, expiration: time_t| {
        let mut value = 0u64;
        // SAFETY: memc.0 is live; the key outlives the call and value is a valid out pointer.
        let rc = unsafe {
            f(
                memc.0,
                key.as_ptr().cast(),
                key.len(),
                offset,
                initial,
                expiration,
                &mut value,
            )
        };
        (rc, value)
    };
    let incr = |key: &str, offset: u64, initial: u64, expiration: time_t| {
        call(
            memcached_increment_with_initial,
            key,
            offset,
            initial,
            expiration,
        )
    };
    let decr = |key: &str, offset: u64, initial: u64, expiration: time_t| {
        call(
            memcached_decrement_with_initial,
            key,
            offset,
            initial,
            expiration,
        )
    };
    // Values past 32 bits: a u32 in the declaration would truncate them.
    let (initial, offset) = (1u64 << 40, 1u64 << 33);
    assert_eq!(incr("n", offset, initial, 0), (MEMCACHED_SUCCESS, initial));
    assert_eq!(
        incr("n", offset, initial, 0),
        (MEMCACHED_SUCCESS, initial + offset)
    );
    assert_eq!(
        raw_value(&server, "n"),
        Some((initial + offset).to_string())
    );
    assert_eq!(
        decr("n", offset + 1, 7, 0),
        (MEMCACHED_SUCCESS, initial - 1)
    );
    // A missing key is created with the initial value, decr too.
    assert_eq!(decr("m", 1, 7, 0), (MEMCACHED_SUCCESS, 7));
    assert_eq!(raw_value(&server, "m"), Some("7".to_string()));
    // The expiration is the sixth argument: MEMCACHED_EXPIRATION_NOT_ADD means "do not
    // create", so a missing key stays missing.
    let not_add = time_t::from(MEMCACHED_EXPIRATION_NOT_ADD);
    assert_eq!(incr("absent", 1, 5, not_add).0, MEMCACHED_NOTFOUND);
    assert_eq!(decr("absent", 1, 5, not_add).0, MEMCACHED_NOTFOUND);
    assert_eq!(raw_value(&server, "absent"), None);

    // The text protocol has no such command: libmemcached refuses without sending.
    let text = Memc::new(&[&server], false);
    let mut value = 0u64;
    // SAFETY: text.0 is live; the key outlives the call and value is a valid out pointer.
    let rc = unsafe {
        memcached_increment_with_initial(text.0, b"t".as_ptr().cast(), 1, 1, 1, 0, &mut value)
    };
    assert_eq!(rc, MEMCACHED_INVALID_ARGUMENTS, "{}", text.strerror(rc));
}

#[test]
fn memcached_stat_parses_every_server_and_its_values_read_back_by_name() {
    let servers = [Memcached::start(), Memcached::start()];
    for binary in [true, false] {
        let memc = Memc::new(&[&servers[0], &servers[1]], binary);
        assert_eq!(memc.set("k", "v"), MEMCACHED_SUCCESS);
        let mut rc = MEMCACHED_FAILURE;
        // SAFETY: memc.0 is live; NULL args mean plain `stats`; rc is a valid out pointer.
        // The array (one entry per server) is freed with memcached_stat_free below.
        let stats = unsafe { memcached_stat(memc.0, ptr::null_mut(), &mut rc) };
        assert_eq!(rc, MEMCACHED_SUCCESS, "{}", memc.strerror(rc));
        assert!(!stats.is_null());
        // SAFETY: memcached_stat returned an array of memcached_server_count entries.
        let entries =
            unsafe { std::slice::from_raw_parts(stats, memcached_server_count(memc.0) as usize) };
        assert_eq!(entries.len(), 2);
        for (entry, server) in entries.iter().zip(&servers) {
            let version = String::from_utf8_lossy(
                // SAFETY: version is a NUL-terminated char array inside the entry.
                unsafe { CStr::from_ptr(entry.version.as_ptr()) }.to_bytes(),
            )
            .into_owned();
            let theirs: BTreeMap<String, String> = server.stats().into_iter().collect();
            assert_eq!(Some(&version), theirs.get("version"));
            assert_eq!(u64::try_from(entry.pid).ok(), Some(server.stat("pid")));
            assert_eq!(entry.threads, server.stat("threads") as _);
            assert_eq!(entry.limit_maxbytes, server.stat("limit_maxbytes") as _);

            let mut rc = MEMCACHED_FAILURE;
            // SAFETY: memc.0 and entry are live; the returned array is NULL-terminated,
            // malloc'ed by libmemcached (default allocators) and freed below; its strings
            // are static.
            let keys = unsafe {
                memcached_stat_get_keys(memc.0, ptr::from_ref(entry).cast_mut(), &mut rc)
            };
            assert_eq!(rc, MEMCACHED_SUCCESS);
            assert!(!keys.is_null());
            let mut values = BTreeMap::new();
            for i in 0.. {
                // SAFETY: keys is NULL-terminated, so every index up to the NULL is valid.
                let key: *mut c_char = unsafe { *keys.add(i) };
                if key.is_null() {
                    break;
                }
                let mut rc = MEMCACHED_FAILURE;
                // SAFETY: memc.0, entry and the key string are live; the value is a
                // malloc'ed NUL-terminated string, copied and freed at once.
                let (name, value) = unsafe {
                    let value = memcached_stat_get_value(
                        memc.0,
                        ptr::from_ref(entry).cast_mut(),
                        key,
                        &mut rc,
                    );
                    assert!(!value.is_null());
                    let copied = CStr::from_ptr(value).to_string_lossy().into_owned();
                    free(value.cast());
                    (CStr::from_ptr(key).to_string_lossy().into_owned(), copied)
                };
                assert_eq!(rc, MEMCACHED_SUCCESS, "{name}");
                values.insert(name, value);
            }
            // SAFETY: keys was malloc'ed by memcached_stat_get_keys and is freed once.
            unsafe { free(keys.cast()) };
            assert_eq!(values.len(), 22, "{values:?}");
            for name in ["pid", "version", "threads", "limit_maxbytes"] {
                assert_eq!(values.get(name), theirs.get(name), "{name}");
            }
            let mut rc = MEMCACHED_SUCCESS;
            let unknown = CString::new("no_such_stat").unwrap();
            // SAFETY: as above; an unknown name returns NULL (nothing to free) and an error.
            let none = unsafe {
                memcached_stat_get_value(
                    memc.0,
                    ptr::from_ref(entry).cast_mut(),
                    unknown.as_ptr(),
                    &mut rc,
                )
            };
            assert!(none.is_null());
            // libmemcached 1.1.4: "Invalid key provided".
            assert_eq!(rc, MEMCACHED_INVALID_ARGUMENTS, "{}", memc.strerror(rc));
        }
        // SAFETY: stats came from memcached_stat and is freed once, with its handle alive.
        unsafe { memcached_stat_free(memc.0, stats) };
    }
}

#[test]
fn a_parsed_server_list_is_pushed_onto_a_handle_and_freed() {
    let servers = [Memcached::start(), Memcached::start()];
    let spec = CString::new(format!(
        "127.0.0.1:{}, 127.0.0.1:{}",
        servers[0].port(),
        servers[1].port()
    ))
    .unwrap();
    // SAFETY: spec is a NUL-terminated string; the returned list is freed below.
    let list = unsafe { memcached_servers_parse(spec.as_ptr()) };
    assert!(!list.is_null());
    let memc = Memc::new(&[], true);
    // SAFETY: memc.0 and list are live; libmemcached copies the servers, so the list can be
    // freed right after.
    let rc = unsafe { memcached_server_push(memc.0, list) };
    assert_eq!(rc, MEMCACHED_SUCCESS, "{}", memc.strerror(rc));
    // SAFETY: list came from memcached_servers_parse and is freed once.
    unsafe { memcached_server_list_free(list) };
    // SAFETY: memc.0 is live.
    assert_eq!(unsafe { memcached_server_count(memc.0) }, 2);
    for (i, server) in servers.iter().enumerate() {
        // SAFETY: i is below the server count; the name is copied at once.
        let (name, port) = unsafe {
            let instance = memcached_server_instance_by_position(memc.0, i as u32);
            (
                CStr::from_ptr(memcached_server_name(instance))
                    .to_string_lossy()
                    .into_owned(),
                memcached_server_port(instance),
            )
        };
        assert_eq!((name.as_str(), port), ("127.0.0.1", server.port()));
    }
    // The pushed servers are used: keys reach both.
    for i in 0..20 {
        assert_eq!(memc.set(&format!("k{i}"), "v"), MEMCACHED_SUCCESS);
    }
    assert!(servers.iter().all(|s| s.stat("curr_items") > 0));
}

#[test]
fn destroyed_sasl_auth_data_is_no_longer_sent() {
    // A memcached without SASL: a handle that tries to authenticate fails.
    let server = Memcached::start();
    let user = CString::new("alice").unwrap();
    let password = CString::new("s3cret").unwrap();
    let with_auth = |destroy: bool| {
        let memc = Memc::new(&[&server], true);
        // SAFETY: memc.0 is live; libmemcached copies both strings.
        let rc = unsafe { memcached_set_sasl_auth_data(memc.0, user.as_ptr(), password.as_ptr()) };
        assert_eq!(rc, MEMCACHED_SUCCESS);
        if destroy {
            // SAFETY: memc.0 is live; this frees the copies made above.
            let rc = unsafe { memcached_destroy_sasl_auth_data(memc.0) };
            assert_eq!(rc, MEMCACHED_SUCCESS);
            // Destroying again (nothing left) is harmless.
            // SAFETY: as above.
            let rc = unsafe { memcached_destroy_sasl_auth_data(memc.0) };
            assert_eq!(rc, MEMCACHED_SUCCESS);
        }
        let rc = memc.set("k", "v");
        (rc, memc.strerror(rc))
    };
    let (kept, text) = with_auth(false);
    assert_ne!(
        kept, MEMCACHED_SUCCESS,
        "authentication was not attempted: {text}"
    );
    let (destroyed, text) = with_auth(true);
    assert_eq!(destroyed, MEMCACHED_SUCCESS, "{text}");
    assert_eq!(raw_value(&server, "k"), Some("v".to_string()));
}

/// A handle on one server given by port, text or binary protocol.
fn memc_on_port(port: u16, binary: bool) -> Memc {
    // SAFETY: a NULL argument asks libmemcached to allocate the handle; Drop frees it.
    let memc = Memc(unsafe { memcached_create(ptr::null_mut()) });
    assert!(!memc.0.is_null(), "memcached_create");
    let host = CString::new("127.0.0.1").unwrap();
    // SAFETY: memc.0 is live and owned here; libmemcached copies the host name.
    unsafe {
        assert_eq!(
            memcached_behavior_set(
                memc.0,
                MEMCACHED_BEHAVIOR_BINARY_PROTOCOL,
                u64::from(binary)
            ),
            MEMCACHED_SUCCESS
        );
        assert_eq!(
            memcached_server_add(memc.0, host.as_ptr(), port),
            MEMCACHED_SUCCESS
        );
    }
    memc
}

/// The local and remote ports of a socket, asked from the kernel.
fn socket_ports(fd: i32) -> (u16, u16) {
    let port_of =
        |get: unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32| {
            // SAFETY: a zeroed sockaddr_in is a valid out buffer of the length given.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: fd is a socket of this process; sin and len are valid out pointers.
            let rc = unsafe { get(fd, (&mut sin as *mut libc::sockaddr_in).cast(), &mut len) };
            assert_eq!(rc, 0, "getsockname/getpeername on fd {fd}");
            u16::from_be(sin.sin_port)
        };
    (port_of(libc::getsockname), port_of(libc::getpeername))
}

/// The private instance fields `memcached_instance_fields` reads are where
/// `instance_layout` says, on the linked library: the socket is the one libmemcached's own
/// `memcached_server_srcport` asks about and leads to the server; bytes a server sent beyond
/// its reply are counted as buffered; a server left alone has its retry time.
#[test]
fn the_private_instance_fields_are_read_from_the_linked_library() {
    assert!(instance_layout_known(), "libmemcached is not a 1.1.x");
    let server = Memcached::start();
    for binary in [true, false] {
        let memc = Memc::new(&[&server], binary);
        // SAFETY: memc.0 is live; position 0 is its only server.
        let instance = unsafe { memcached_server_instance_by_position(memc.0, 0) };
        // SAFETY: as above.
        let before = unsafe { memcached_instance_fields(memc.0, instance) }.expect("fields");
        assert!(before.fd < 0, "not connected yet: {before:?}");
        assert_eq!(memc.set("layout", "v"), MEMCACHED_SUCCESS);
        // SAFETY: as above.
        let fields = unsafe { memcached_instance_fields(memc.0, instance) }.expect("fields");
        assert!(fields.fd >= 0, "{fields:?}");
        assert_eq!((fields.read_buffer_length, fields.response_count), (0, 0));
        let (local, remote) = socket_ports(fields.fd);
        // SAFETY: instance is a live server of memc.
        assert_eq!(local, unsafe { memcached_server_srcport(instance) });
        assert_eq!(remote, server.port());
        // Another handle's server is not this handle's.
        let other = Memc::new(&[&server], binary);
        // SAFETY: both handles are live; the instance is memc's, not other's.
        assert!(unsafe { memcached_instance_fields(other.0, instance) }.is_none());
    }

    // A server that answers a text `set` with one line more than the reply.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("set ") {
                let _value = lines.next();
                writer.write_all(b"STORED\r\nEXTRA\r\n").unwrap();
            }
        }
    });
    let memc = memc_on_port(port, false);
    assert_eq!(memc.set("k", "v"), MEMCACHED_SUCCESS);
    // SAFETY: memc.0 is live; position 0 is its only server.
    let fields = unsafe {
        memcached_instance_fields(memc.0, memcached_server_instance_by_position(memc.0, 0))
    }
    .expect("fields");
    assert_eq!(fields.read_buffer_length, b"EXTRA\r\n".len(), "{fields:?}");

    // A server nobody listens on: after the failed connect it is left alone for
    // retry_timeout, and next_retry says until when.
    let dead = newcache_testkit::free_port();
    let memc = memc_on_port(dead, true);
    // SAFETY: memc.0 is live.
    unsafe { memcached_behavior_set(memc.0, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 30) };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as time_t;
    assert!(memcached_failed(memc.set("k", "v")));
    // SAFETY: memc.0 is live; position 0 is its only server.
    let fields = unsafe {
        memcached_instance_fields(memc.0, memcached_server_instance_by_position(memc.0, 0))
    }
    .expect("fields");
    assert!(
        (now + 29..=now + 31).contains(&fields.next_retry),
        "next_retry {} for now {now}",
        fields.next_retry
    );
    assert!(fields.fd < 0);
}

//! Checks the hand-written declarations against the installed headers: a small C program,
//! compiled here with the system C compiler (`$CC`, else `cc`), prints the size and alignment
//! of every struct we declare, the offset of each of their fields, and the value of every
//! enumerator; each must equal what the Rust declarations say.

use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use libmemcached_sys::*;

/// `(C expression, Rust value)` pairs, the C side printed by the program.
type Checks = Vec<(String, u64)>;

macro_rules! consts {
    ($checks:ident: $($name:ident),* $(,)?) => {
        $( $checks.push((stringify!($name).to_string(), u64::from($name))); )*
    };
}

macro_rules! layout {
    ($checks:ident: $ty:ident { $($field:ident),* $(,)? }) => {
        $checks.push((format!("sizeof({})", stringify!($ty)), size_of::<$ty>() as u64));
        $checks.push((format!("_Alignof({})", stringify!($ty)), align_of::<$ty>() as u64));
        $(
            $checks.push((
                format!("offsetof({}, {})", stringify!($ty), stringify!($field)),
                offset_of!($ty, $field) as u64,
            ));
        )*
    };
}

fn rust_side() -> Checks {
    let mut c: Checks = Vec::new();
    layout!(c: memcached_string_st { end, string, current_size, root, options });
    layout!(c: memcached_result_st {
        item_flags, item_expiration, key_length, item_cas, root, value, numeric_value, count,
        item_key, options,
    });
    layout!(c: memcached_stat_st {
        connection_structures, curr_connections, curr_items, pid, pointer_size,
        rusage_system_microseconds, rusage_system_seconds, rusage_user_microseconds,
        rusage_user_seconds, threads, time, total_connections, total_items, uptime, bytes,
        bytes_read, bytes_written, cmd_get, cmd_set, evictions, get_hits, get_misses,
        limit_maxbytes, version, __future, root,
    });
    for (name, size) in [
        ("memcached_return_t", size_of::<memcached_return_t>()),
        ("memcached_behavior_t", size_of::<memcached_behavior_t>()),
        ("memcached_hash_t", size_of::<memcached_hash_t>()),
        (
            "memcached_server_distribution_t",
            size_of::<memcached_server_distribution_t>(),
        ),
        ("time_t", size_of::<time_t>()),
        ("in_port_t", size_of::<in_port_t>()),
        ("pid_t", size_of::<pid_t>()),
        ("size_t", size_of::<usize>()),
    ] {
        c.push((format!("sizeof({name})"), size as u64));
    }
    c.push((
        "offsetof(memcached_st, result)".into(),
        MEMCACHED_ST_RESULT_OFFSET as u64,
    ));
    c.push(("MEMCACHED_MAX_KEY".into(), MEMCACHED_MAX_KEY as u64));
    c.push((
        "MEMCACHED_VERSION_STRING_LENGTH".into(),
        MEMCACHED_VERSION_STRING_LENGTH as u64,
    ));
    consts!(c:
        MEMCACHED_DEFAULT_TIMEOUT, MEMCACHED_DEFAULT_CONNECT_TIMEOUT,
        MEMCACHED_SERVER_FAILURE_LIMIT, MEMCACHED_SERVER_FAILURE_RETRY_TIMEOUT,
        MEMCACHED_SERVER_FAILURE_DEAD_TIMEOUT, MEMCACHED_EXPIRATION_NOT_ADD,
    );
    // Every enumerator of the four enums, from the lists the declarations themselves make,
    // so a constant added there is checked here without being listed twice.
    for (name, value) in RETURN_VALUES
        .iter()
        .chain(BEHAVIOR_VALUES)
        .chain(HASH_VALUES)
        .chain(DISTRIBUTION_VALUES)
    {
        c.push((name.to_string(), u64::from(*value)));
    }
    c
}

/// Compiles and runs a C program printing `EXPR<TAB>VALUE` for every check.
fn c_side(checks: &Checks) -> BTreeMap<String, u64> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libmemcached-sys-layout");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let source = dir.join("layout.c");
    let binary = dir.join("layout");
    let mut program = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include <libmemcached/memcached.h>\n\
         int main(void) {\n",
    );
    for (expr, _) in checks {
        program.push_str(&format!(
            "  printf(\"%s\\t%llu\\n\", \"{expr}\", (unsigned long long)({expr}));\n"
        ));
    }
    program.push_str("  return 0;\n}\n");
    std::fs::write(&source, program).unwrap_or_else(|e| panic!("write layout.c: {e}"));

    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let mut cmd = Command::new(&cc);
    cmd.args(
        option_env!("LIBMEMCACHED_CFLAGS")
            .unwrap_or("")
            .split_whitespace(),
    )
    .arg("-std=c11")
    .arg("-o")
    .arg(&binary)
    .arg(&source);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}; install gcc or set CC"));
    assert!(
        out.status.success(),
        "{cc} failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&binary)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    assert!(out.status.success(), "{} failed", binary.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (expr, value) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
            (expr.to_string(), value)
        })
        .collect()
}

#[test]
fn struct_layouts_and_enum_values_match_the_installed_headers() {
    let checks = rust_side();
    let c = c_side(&checks);
    let mismatches: Vec<String> = checks
        .iter()
        .filter(|(expr, rust)| c.get(expr) != Some(rust))
        .map(|(expr, rust)| format!("{expr}: Rust says {rust}, C says {:?}", c.get(expr)))
        .collect();
    assert!(
        mismatches.is_empty(),
        "the declarations disagree with the headers:\n{}",
        mismatches.join("\n")
    );
    // The checks really ran: every struct and all four enums were compared.
    assert!(checks.len() > 150, "only {} checks", checks.len());
}

#[test]
fn the_linked_library_is_the_tested_major_version() {
    // SAFETY: memcached_lib_version returns a pointer to a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(memcached_lib_version()) }
        .to_string_lossy()
        .into_owned();
    assert!(version.starts_with("1."), "libmemcached {version}");
}

/// Runs `memcached_mget` of `keys` on `memc` and reads every item with
/// `memcached_fetch_result` into `result`; returns `(key, value)` of each item and the code
/// that ended the fetch.
///
/// # Safety
///
/// `memc` is a live handle and `result` a live result created on it.
unsafe fn mget_fetch(
    memc: *mut memcached_st,
    result: *mut memcached_result_st,
    keys: &[&str],
) -> (Vec<(String, String)>, memcached_return_t) {
    let pointers: Vec<*const std::os::raw::c_char> =
        keys.iter().map(|k| k.as_ptr().cast()).collect();
    let lengths: Vec<usize> = keys.iter().map(|k| k.len()).collect();
    // SAFETY: memc is live (the caller promises); both arrays hold keys.len() entries
    // pointing into key strings that outlive the call.
    let rc = unsafe { memcached_mget(memc, pointers.as_ptr(), lengths.as_ptr(), keys.len()) };
    assert_eq!(rc, MEMCACHED_SUCCESS);
    let mut items = Vec::new();
    let mut rc = MEMCACHED_SUCCESS;
    loop {
        // SAFETY: memc and result are live (the caller promises); rc is a valid out pointer.
        let r = unsafe { memcached_fetch_result(memc, result, &mut rc) };
        if r.is_null() {
            return (items, rc);
        }
        // The result handed in is filled in place, never replaced.
        assert_eq!(r, result);
        // SAFETY: r is the live result just filled; its key and value buffers hold the
        // lengths reported and are copied before the next fetch.
        let item = unsafe {
            let key = std::slice::from_raw_parts(
                memcached_result_key_value(r).cast::<u8>(),
                memcached_result_key_length(r),
            );
            let value = std::slice::from_raw_parts(
                memcached_result_value(r).cast::<u8>(),
                memcached_result_length(r),
            );
            (
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            )
        };
        items.push(item);
    }
}

/// The trap this crate's docs warn of: `memcached_fetch_result` frees, at the end of a
/// fetch, a result that libmemcached allocated (`memcached_result_create(memc, NULL)`), so
/// freeing it again is a double free; storage the caller owns is only reset. Run under
/// valgrind by `cargo xtask leakcheck`, which would report the double free or a leak.
#[test]
fn a_result_in_caller_owned_storage_survives_a_real_fetch_and_is_freed_once() {
    use std::mem::MaybeUninit;
    use std::ptr;
    let server = newcache_testkit::Memcached::start();
    for binary in [true, false] {
        // SAFETY: a NULL argument asks memcached_create to allocate a handle; it is freed
        // below, after every result made on it.
        let memc = unsafe { memcached_create(ptr::null_mut()) };
        assert!(!memc.is_null());
        let host = std::ffi::CString::new("127.0.0.1").unwrap();
        // SAFETY: memc is a live handle; libmemcached copies the host name.
        unsafe {
            assert_eq!(
                memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, u64::from(binary)),
                MEMCACHED_SUCCESS
            );
            assert_eq!(
                memcached_server_add(memc, host.as_ptr(), server.port()),
                MEMCACHED_SUCCESS
            );
        }
        for (key, value) in [("trap:a", "1"), ("trap:b", "22"), ("trap:c", "333")] {
            // SAFETY: memc is live; key and value outlive the call.
            let rc = unsafe {
                memcached_set(
                    memc,
                    key.as_ptr().cast(),
                    key.len(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                    0,
                )
            };
            assert_eq!(rc, MEMCACHED_SUCCESS);
        }
        let keys = ["trap:a", "trap:missing", "trap:b", "trap:c"];
        let expected = vec![
            ("trap:a".to_string(), "1".to_string()),
            ("trap:b".into(), "22".into()),
            ("trap:c".into(), "333".into()),
        ];

        let mut storage = MaybeUninit::<memcached_result_st>::zeroed();
        // SAFETY: memc is live; storage has the header's size and alignment (checked by
        // the layout test) and outlives every use of the result below.
        let result = unsafe { memcached_result_create(memc, storage.as_mut_ptr()) };
        assert_eq!(result, storage.as_mut_ptr());
        // Two full fetches through the same caller-owned result: had the first one freed
        // it, the second would write into freed memory.
        for round in 0..2 {
            // SAFETY: memc and result are live.
            let (mut items, rc) = unsafe { mget_fetch(memc, result, &keys) };
            items.sort();
            assert_eq!(items, expected, "binary {binary}, round {round}");
            assert_eq!(rc, MEMCACHED_END, "binary {binary}, round {round}");
        }
        // SAFETY: result was initialized by memcached_result_create on caller-owned
        // storage, so this frees its value buffer only, once.
        unsafe { memcached_result_free(result) };

        // A result libmemcached allocates: the fetch that ends frees it. Not freed here.
        // SAFETY: memc is live; a NULL storage pointer makes libmemcached allocate.
        let allocated = unsafe { memcached_result_create(memc, ptr::null_mut()) };
        assert!(!allocated.is_null());
        // SAFETY: memc and allocated are live until the fetch's end frees allocated.
        let (mut items, rc) = unsafe { mget_fetch(memc, allocated, &keys) };
        items.sort();
        assert_eq!((items, rc), (expected, MEMCACHED_END));

        // SAFETY: every result made on memc is gone; the handle is freed once.
        unsafe { memcached_free(memc) };
    }
}

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

#[test]
fn a_result_in_caller_owned_storage_survives_a_fetch_and_is_freed_once() {
    use std::mem::MaybeUninit;
    use std::ptr;
    // SAFETY: a NULL argument asks memcached_create to allocate a handle; it is freed below.
    let memc = unsafe { memcached_create(ptr::null_mut()) };
    assert!(!memc.is_null());
    let mut storage = MaybeUninit::<memcached_result_st>::zeroed();
    // SAFETY: memc is a live handle; storage is correctly sized and aligned (checked above)
    // and outlives every use of the result below.
    let result = unsafe { memcached_result_create(memc, storage.as_mut_ptr()) };
    assert_eq!(result, storage.as_mut_ptr());
    let mut rc = MEMCACHED_SUCCESS;
    // No servers and no mget: the fetch ends at once. With caller-owned storage
    // libmemcached only resets the result (it frees results it allocated itself).
    // SAFETY: memc and result are live; rc is a valid out pointer.
    let fetched = unsafe { memcached_fetch_result(memc, result, &mut rc) };
    assert!(fetched.is_null());
    assert_ne!(rc, MEMCACHED_SUCCESS);
    // SAFETY: result was initialized by memcached_result_create and not freed; then the
    // handle, which the result refers to, is freed last.
    unsafe {
        memcached_result_free(result);
        memcached_free(memc);
    }
}

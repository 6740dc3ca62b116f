//! Finds libmemcached with pkg-config and links it.
//!
//! Only `-lmemcached` is linked: pkg-config's `libmemcached.pc` also lists `-lmemcachedutil`
//! (the C connection pool, which these bindings do not use) and, through `Requires: libsasl2`,
//! `-lsasl2`, which `libmemcached.so` already depends on itself (see `ldd`).
//!
//! The C compiler flags (`-I...`) are passed on to the crate's own tests, which compile a small
//! C program against the headers to check the Rust layouts, as `LIBMEMCACHED_CFLAGS`, and to
//! dependents as `DEP_MEMCACHED_INCLUDE` (a `:`-separated list).

use std::process::exit;

const NOT_FOUND: &str = "libmemcached not found: install libmemcached-dev (Debian/Ubuntu: apt-get install libmemcached-dev) or libmemcached (Homebrew: brew install libmemcached)";

fn main() {
    // docs.rs builds documentation without libmemcached installed: nothing to link there.
    if std::env::var_os("DOCS_RS").is_some() {
        return;
    }
    let lib = match pkg_config::Config::new()
        .atleast_version("1.0")
        .cargo_metadata(false)
        .env_metadata(false)
        .probe("libmemcached")
    {
        Ok(lib) => lib,
        Err(_) => {
            // One clear line; pkg-config's own multi-line report adds nothing actionable.
            // (A failed build script always runs again, so no rerun-if lines are needed.)
            eprintln!("{NOT_FOUND}");
            exit(1);
        }
    };
    println!("cargo:rerun-if-changed=build.rs");
    for dir in &lib.link_paths {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    println!("cargo:rustc-link-lib=dylib=memcached");

    let includes: Vec<String> = lib
        .include_paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    println!("cargo:include={}", includes.join(":"));
    let cflags: Vec<String> = includes.iter().map(|p| format!("-I{p}")).collect();
    println!("cargo:rustc-env=LIBMEMCACHED_CFLAGS={}", cflags.join(" "));
    println!("cargo:rustc-env=LIBMEMCACHED_VERSION={}", lib.version);
    for var in [
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "PKG_CONFIG_SYSROOT_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
}

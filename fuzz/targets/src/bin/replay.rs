//! Runs fuzz inputs through the targets' bodies on stable Rust, without libFuzzer.
//!
//! - `replay`: every file of `fuzz/corpus/TARGET/` and `fuzz/regressions/TARGET/`, for
//!   every target (`cargo xtask test` runs this);
//! - `replay TARGET [PATH...]`: that target's files, or the files (and directories) given,
//!   such as a crash input libFuzzer left in `fuzz/artifacts/TARGET/`.
//!
//! `--verbose` names each input before running it (to find one that aborts the process, as a
//! stack overflow does, which no panic handler sees). Exits 1 when any input panics, after
//! running them all, with each failure's input, panic message and place.
//!
//! As under libFuzzer (`-malloc_limit_mb` and `-rss_limit_mb`, 2048 MB by default), an input
//! that asks for too much memory fails: one allocation of more than 2 GiB, or more than
//! 3 GiB live at once (libFuzzer counts the pages touched, this the bytes allocated: a value
//! buffer allocated zeroed at its announced size and never filled counts here, not there).
//! The allocation fails, and the process aborts naming its size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use newcache_fuzz_targets::{Target, TARGETS};

/// libFuzzer's default limit on one allocation (`-malloc_limit_mb`, the `-rss_limit_mb`
/// of 2048 MB): an input that asks for more fails here as it does there.
const MALLOC_LIMIT: usize = 2048 << 20;

/// The most bytes allocated at once (see the module's documentation).
const LIVE_LIMIT: usize = 3 << 30;

/// Bytes allocated now.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, refusing single allocations over [`MALLOC_LIMIT`] and any that
/// would take the bytes allocated past [`LIVE_LIMIT`] (the caller's allocation-failure
/// handling aborts the process, naming the size).
struct Limited;

impl Limited {
    /// Counts `size` more bytes, or refuses them.
    fn claim(size: usize) -> bool {
        if size > MALLOC_LIMIT {
            return false;
        }
        let before = LIVE.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > LIVE_LIMIT {
            LIVE.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn release(size: usize) {
        LIVE.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` unchanged, or refused with a null pointer,
// which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Limited::claim(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            Limited::release(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Limited::claim(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            Limited::release(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        Limited::release(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Limited::claim(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            Limited::release(new_size);
        } else {
            Limited::release(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

/// The message and place of the last panic, recorded by the panic hook.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "--verbose");
    args.retain(|a| a != "--verbose");
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let plan = match plan(&fuzz_dir, &args) {
        Ok(plan) => plan,
        Err(msg) => {
            eprintln!("replay: {msg}");
            return ExitCode::from(2);
        }
    };
    panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let backtrace = std::backtrace::Backtrace::capture();
        let trace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("{message}{place}{trace}"));
    }));
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, target, files) in &plan {
        for file in files {
            if verbose {
                eprintln!("replay: {name} {}", file.display());
            }
            let data = match std::fs::read(file) {
                Ok(data) => data,
                Err(e) => {
                    failures.push(format!("{name} {}: cannot read: {e}", file.display()));
                    continue;
                }
            };
            total += 1;
            if panic::catch_unwind(|| target(&data)).is_err() {
                let message = LAST_PANIC
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                failures.push(format!("{name} {}: panicked: {message}", file.display()));
            }
        }
        if verbose || files.is_empty() {
            eprintln!("replay: {name}: {} inputs", files.len());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if failures.is_empty() {
        eprintln!(
            "replay: {total} inputs of {} targets in {secs:.1} s, no panic",
            plan.len()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "replay: {} of {total} inputs failed ({secs:.1} s):",
            failures.len()
        );
        for f in &failures {
            eprintln!("  {f}");
        }
        ExitCode::FAILURE
    }
}

/// The targets to run and their input files, in a stable order.
fn plan(fuzz_dir: &Path, args: &[String]) -> Result<Vec<(String, Target, Vec<PathBuf>)>, String> {
    let known = || {
        TARGETS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lookup = |name: &str| {
        TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("no target {name:?}; the targets: {}", known()))
    };
    if let Some((name, paths)) = args.split_first() {
        let target = lookup(name)?;
        let mut files = Vec::new();
        if paths.is_empty() {
            for dir in ["corpus", "regressions"] {
                files.extend(files_in(&fuzz_dir.join(dir).join(name))?);
            }
        }
        for p in paths {
            let p = PathBuf::from(p);
            if p.is_dir() {
                files.extend(files_in(&p)?);
            } else {
                files.push(p);
            }
        }
        return Ok(vec![(name.clone(), target, files)]);
    }
    // Every directory under corpus/ and regressions/ must be a target's: a target renamed
    // without its inputs would otherwise replay nothing, silently.
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && lookup(&name).is_err() {
                return Err(format!(
                    "fuzz/{dir}/{name} is no target's; the targets: {}",
                    known()
                ));
            }
        }
    }
    TARGETS
        .iter()
        .map(|(name, target)| {
            let mut files = Vec::new();
            for dir in ["corpus", "regressions"] {
                files.extend(files_in(&fuzz_dir.join(dir).join(name))?);
            }
            Ok((name.to_string(), *target, files))
        })
        .collect()
}

/// The files of `dir` (none when it does not exist), sorted; dotfiles and `README*` left out.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            !name.starts_with('.') && !name.starts_with("README")
        })
        .collect();
    files.sort();
    Ok(files)
}

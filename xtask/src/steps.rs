//! How `cargo xtask` runs a step: its output on the terminal or in a lane's log, and how
//! long it took (wall and CPU time).

#[allow(unused_imports)]
use super::*;

pub(crate) fn run(cmd: Command, what: &str) -> Result<(), String> {
    Lane::Terminal.run(cmd, what)
}

/// Where a step's output goes: the terminal, or a log file, for the steps `cargo xtask
/// test` runs beside the others (printed whole when they are done, not interleaved).
pub(crate) enum Lane {
    Terminal,
    Log(PathBuf),
}

impl Lane {
    /// A line of xtask's own, where the steps' output goes.
    pub(crate) fn say(&self, line: &str) {
        use std::io::Write as _;
        match self {
            Lane::Terminal => eprintln!("{line}"),
            Lane::Log(path) => {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
    }

    /// Runs `cmd` (its output where this lane's goes) and says how long it took.
    pub(crate) fn status(
        &self,
        mut cmd: Command,
        what: &str,
    ) -> Result<std::process::ExitStatus, String> {
        self.say(&format!("xtask: {what}: {cmd:?}"));
        if let Lane::Log(path) = self {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let err = file
                .try_clone()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            cmd.stdout(file).stderr(err);
        }
        let timer = StepTimer::start();
        let status = cmd
            .status()
            .map_err(|e| format!("{what}: cannot run: {e}"))?;
        self.say(&timer.line(what));
        Ok(status)
    }

    pub(crate) fn run(&self, cmd: Command, what: &str) -> Result<(), String> {
        let status = self.status(cmd, what)?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{what} failed ({status})"))
        }
    }
}

/// Set while `cargo xtask test` runs two lanes of steps at once: a step's CPU time, read as
/// this process's children's, would then count the other lane's too, so it is not shown.
pub(crate) static TWO_LANES: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A step's wall time, and the CPU time (user + system) of the processes it ran, for the
/// `xtask: <step> took N s` lines: on this shared 2-core machine wall time alone says little.
pub(crate) struct StepTimer {
    pub(crate) started: std::time::Instant,
    pub(crate) cpu: Option<f64>,
}

impl StepTimer {
    pub(crate) fn start() -> StepTimer {
        StepTimer {
            started: std::time::Instant::now(),
            cpu: children_cpu_secs(),
        }
    }

    pub(crate) fn line(&self, what: &str) -> String {
        let wall = self.started.elapsed().as_secs_f64();
        let two_lanes = TWO_LANES.load(std::sync::atomic::Ordering::Relaxed);
        match (self.cpu, children_cpu_secs()) {
            (Some(before), Some(after)) if !two_lanes => {
                format!(
                    "xtask: {what} took {wall:.1} s (CPU {:.1} s)",
                    after - before
                )
            }
            _ => format!("xtask: {what} took {wall:.1} s"),
        }
    }

    pub(crate) fn report(&self, what: &str) {
        eprintln!("{}", self.line(what));
    }
}

/// User + system time of this process's finished (waited-for) children and theirs, from
/// Linux's /proc/self/stat (`cutime`, `cstime`, in the kernel's fixed 100 ticks a second);
/// `None` elsewhere.
pub(crate) fn children_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // first of them is field 3 (state), so cutime (field 16) and cstime (17) are 13 and 14.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(13)? + ticks(14)?) as f64 / 100.0)
}

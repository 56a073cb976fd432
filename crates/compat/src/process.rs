//! Running child processes in their own process group, logged to a file, under a wall-clock cap.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Finished {
    /// Exit code; `None` when killed by a signal (including our cap).
    pub code: Option<i32>,
    /// The cap was reached and the whole process group was killed.
    pub killed_at_cap: bool,
    /// The work was done (the marker appeared) but the process would not exit.
    pub lingered: bool,
    /// Killed by the stall watchdog: its progress file stopped growing (not the cap).
    pub stalled: bool,
    pub wall_seconds: f64,
}

/// How long a process may linger after reporting it is done (e.g. joining leftover
/// multiprocessing workers at exit) before it is interrupted.
pub const LINGER_GRACE: Duration = Duration::from_secs(30);
/// After the interrupt, how long exit handlers (asyncbis's stats file) get before the kill.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);

/// Runs `command` with stdout and stderr appended to `log`, killing its whole process group
/// (servers and workers it started included) once `cap` has passed.
pub fn run_capped(command: &mut Command, log: &Path, cap: Duration) -> Result<Finished, String> {
    run_capped_with_marker(command, log, cap, None, LINGER_GRACE, None)
}

/// The stall watchdog: the process is killed when `file` stops growing for `limit`, or for
/// `startup` while it is still empty (collection can take long before anything is recorded).
#[derive(Debug, Clone, Copy)]
pub struct Stall<'p> {
    pub file: &'p Path,
    pub startup: Duration,
    pub limit: Duration,
}

/// Like `run_capped`; once `done_marker` exists, a process still running after a grace period
/// gets SIGINT (so exit handlers still run), then the group is killed.
pub fn run_capped_with_marker(
    command: &mut Command,
    log: &Path,
    cap: Duration,
    done_marker: Option<&Path>,
    linger_grace: Duration,
    stall: Option<Stall>,
) -> Result<Finished, String> {
    let describe = format!("{:?}", command.get_program());
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|err| format!("cannot open log {}: {err}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|err| format!("cannot open log {}: {err}", log.display()))?;
    let started = Instant::now();
    // A tool started in the background by a non-interactive shell inherits SIGINT ignored, and
    // so would every suite it runs: pytest then never sees the interrupt that ends a lingering
    // session. Give the child the default disposition back.
    // SAFETY: signal() is async-signal-safe, as required between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot start {describe}: {err}"))?;
    let group = child.id() as i32;
    let mut killed_at_cap = false;
    let mut lingered = false;
    let mut done_since: Option<Instant> = None;
    let mut interrupted_at: Option<Instant> = None;
    let mut stalled = false;
    let mut last_progress = (0_u64, Instant::now());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(err) => return Err(format!("waiting for {describe}: {err}")),
        }
        if !killed_at_cap && started.elapsed() > cap {
            killed_at_cap = true;
            signal(-group, libc::SIGKILL);
        }
        // A progress file that stops growing means a test is stuck beyond what its own
        // timeout could stop (e.g. a runaway loop that swallows pytest-timeout's exception).
        if let Some(watch) = stall {
            let size = std::fs::metadata(watch.file).map(|m| m.len()).unwrap_or(0);
            let limit = if size == 0 {
                watch.startup
            } else {
                watch.limit
            };
            if size != last_progress.0 {
                last_progress = (size, Instant::now());
            } else if !killed_at_cap
                && !stalled
                && done_since.is_none()
                && last_progress.1.elapsed() > limit
            {
                stalled = true;
                signal(-group, libc::SIGKILL);
            }
        }
        if done_since.is_none() && done_marker.is_some_and(Path::exists) {
            done_since = Some(Instant::now());
        }
        match (done_since, interrupted_at) {
            (Some(done), None) if done.elapsed() > linger_grace => {
                lingered = true;
                interrupted_at = Some(Instant::now());
                signal(group, libc::SIGINT);
            }
            (_, Some(interrupted)) if interrupted.elapsed() > INTERRUPT_GRACE => {
                signal(-group, libc::SIGKILL)
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Leftovers (test servers, xdist workers) must not outlive the run.
    signal(-group, libc::SIGKILL);
    Ok(Finished {
        code: status.code(),
        killed_at_cap,
        stalled,
        lingered,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Signals a process (pid > 0) or a process group (pid < 0).
fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) only sends a signal to processes we started; no memory is involved.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Runs a short command and returns its stdout, or an error carrying its stderr.
pub fn output_of(command: &mut Command) -> Result<String, String> {
    let describe = format!("{:?}", command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {describe}: {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "{describe} failed ({}): {}",
            output.status,
            tail(&stderr, 1500)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The last `max` bytes of a text (on a character boundary).
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

pub fn read_tail(path: &Path, max: usize) -> String {
    std::fs::read(path)
        .map(|bytes| tail(&String::from_utf8_lossy(&bytes), max))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("asyncbis-compat-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; sleep 30 & sleep 30"]);
        let finished = run_capped(&mut command, &log, Duration::from_millis(300)).unwrap();
        assert!(finished.killed_at_cap);
        assert!(finished.wall_seconds < 10.0);
        assert!(read_tail(&log, 100).contains("started"));
        let ok = run_capped(Command::new("true").arg("x"), &log, Duration::from_secs(10)).unwrap();
        assert_eq!(ok.code, Some(0));
        assert!(!ok.killed_at_cap);
        assert!(run_capped(
            &mut Command::new("/nonexistent/program"),
            &log,
            Duration::from_secs(1)
        )
        .is_err());
        // Done (marker present) but lingering: interrupted after the grace period, not at the cap.
        let marker = dir.join("done");
        std::fs::write(&marker, "").unwrap();
        let mut lingering = Command::new("sh");
        lingering.args(["-c", "trap 'exit 7' INT; while true; do sleep 0.1; done"]);
        let started = std::time::Instant::now();
        let finished = run_capped_with_marker(
            &mut lingering,
            &log,
            Duration::from_secs(120),
            Some(&marker),
            // Long enough for sh to have installed its trap even on a loaded machine (a SIGINT
            // before that kills it by signal: no exit code 7).
            Duration::from_secs(2),
            None,
        )
        .unwrap();
        assert!(finished.lingered && !finished.killed_at_cap);
        assert_eq!(finished.code, Some(7));
        assert!(started.elapsed() < Duration::from_secs(20));
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(tail("héllo", 3), "llo");
    }

    #[test]
    fn the_stall_watchdog_is_not_the_cap() {
        let dir =
            std::env::temp_dir().join(format!("asyncbis-compat-stall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let progress = dir.join("progress");
        // Writes a line, then nothing more: killed by the watchdog, long before the cap.
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("echo one >> {}; sleep 60", progress.display()));
        let finished = run_capped_with_marker(
            &mut command,
            &log,
            Duration::from_secs(120),
            None,
            LINGER_GRACE,
            Some(Stall {
                file: &progress,
                startup: Duration::from_secs(60),
                limit: Duration::from_millis(500),
            }),
        )
        .unwrap();
        assert!(finished.stalled && !finished.killed_at_cap);
        assert_eq!(finished.code, None);
        let _ = std::fs::remove_dir_all(dir);
    }
}

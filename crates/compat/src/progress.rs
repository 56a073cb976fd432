//! Progress on stderr: one line per event with a bar of finished steps, readable in CI logs too.

use crate::results::Counts;
use crate::study::SuiteRun;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub struct Progress {
    started: Instant,
    total: AtomicUsize,
    done: AtomicUsize,
    projects_total: usize,
    projects_done: AtomicUsize,
    lock: Mutex<()>,
    quiet: bool,
}

/// Steps a project always takes: prepare, stock twice, asyncbis once.
pub const STEPS_PER_PROJECT: usize = 4;

impl Progress {
    pub fn new(projects: usize, quiet: bool) -> Progress {
        Progress {
            started: Instant::now(),
            total: AtomicUsize::new(projects * STEPS_PER_PROJECT),
            done: AtomicUsize::new(0),
            projects_total: projects,
            projects_done: AtomicUsize::new(0),
            lock: Mutex::new(()),
            quiet,
        }
    }

    pub fn add_steps(&self, steps: usize) {
        self.total.fetch_add(steps, Ordering::SeqCst);
    }

    pub fn add_done(&self, steps: usize) {
        self.done.fetch_add(steps, Ordering::SeqCst);
    }

    fn line(&self, label: &str, message: &str) {
        if self.quiet {
            return;
        }
        let total = self.total.load(Ordering::SeqCst).max(1);
        let done = self.done.load(Ordering::SeqCst).min(total);
        let width = 20;
        let filled = done * width / total;
        let bar: String = "#".repeat(filled) + &".".repeat(width - filled);
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!(
            "[{:>5.0}s] [{bar}] {}/{} projects  {label}: {message}",
            self.started.elapsed().as_secs_f64(),
            self.projects_done.load(Ordering::SeqCst),
            self.projects_total
        );
    }

    pub fn note(&self, label: &str, message: &str) {
        if message == "preparing venv" {
            self.done.fetch_add(1, Ordering::SeqCst);
        }
        self.line(label, message);
    }

    pub fn ran(&self, label: &str, run: &SuiteRun, cached: bool) {
        if !run.mode.starts_with("asyncbis-off") {
            self.done.fetch_add(1, Ordering::SeqCst);
        }
        let counts = Counts::of(&run.tests);
        let mut message = format!(
            "{} → {} tests: {} passed, {} failed, {} errors, {} skipped",
            run.mode,
            counts.total(),
            counts.passed,
            counts.failed,
            counts.errors,
            counts.skipped
        );
        if counts.timeouts + counts.hung > 0 {
            message += &format!(", {} timed out, {} hung", counts.timeouts, counts.hung);
        }
        if let Some(activation) = &run.activation {
            message += &format!(
                " [asyncbis tasks {} in {} processes]",
                activation.tasks, activation.processes
            );
        }
        message += &if cached {
            " (cached)".to_string()
        } else {
            format!(" in {:.1}s", run.wall_seconds)
        };
        self.line(label, &message);
    }

    pub fn finish_project(&self, label: &str, message: &str) {
        self.projects_done.fetch_add(1, Ordering::SeqCst);
        // Skipped or failed projects never reach their later steps; count them as done.
        let steps_per = STEPS_PER_PROJECT;
        let expected_done = self.projects_done.load(Ordering::SeqCst) * steps_per;
        let done = self.done.load(Ordering::SeqCst);
        if done < expected_done {
            self.done.fetch_add(expected_done - done, Ordering::SeqCst);
        }
        self.line(label, message);
    }
}

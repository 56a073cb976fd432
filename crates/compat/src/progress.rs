//! Progress on stderr (indicatif). On a terminal: one bar counting finished projects, with each
//! event printed above it. Not on a terminal (CI, logs): no bar and no event lines, one line per
//! finished project. `--quiet`: nothing.

use crate::report::plural;
use crate::results::Counts;
use crate::study::SuiteRun;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A live bar and every event.
    Terminal,
    /// One line per finished project.
    Log,
    Quiet,
}

impl Output {
    pub fn detect(quiet: bool) -> Output {
        if quiet {
            Output::Quiet
        } else if std::io::stderr().is_terminal() {
            Output::Terminal
        } else {
            Output::Log
        }
    }
}

pub struct Progress {
    bar: ProgressBar,
    output: Output,
    started: Instant,
}

impl Progress {
    /// `projects` is the number of (project, Python) pairs: the bar only ever moves forward.
    pub fn new(projects: usize, quiet: bool) -> Progress {
        Progress::with_output(projects, Output::detect(quiet))
    }

    pub fn with_output(projects: usize, output: Output) -> Progress {
        let bar = if output == Output::Terminal {
            ProgressBar::with_draw_target(Some(projects as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_length(projects as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] [{bar:30}] {pos}/{len} projects  {wide_msg}",
            )
            .expect("valid progress template")
            .progress_chars("#>."),
        );
        if output == Output::Terminal {
            // Redraws the elapsed time while a long suite runs without events.
            bar.enable_steady_tick(std::time::Duration::from_millis(500));
        }
        Progress {
            bar,
            output,
            started: Instant::now(),
        }
    }

    /// Projects finished so far.
    pub fn finished(&self) -> u64 {
        self.bar.position()
    }

    /// An event of one project: printed above the bar on a terminal, dropped otherwise.
    pub fn note(&self, label: &str, message: &str) {
        if self.output == Output::Terminal {
            self.bar.println(format!("{label}: {message}"));
            self.bar.set_message(format!("{label}: {message}"));
        }
    }

    pub fn ran(&self, label: &str, run: &SuiteRun, cached: bool) {
        if self.output != Output::Terminal {
            return;
        }
        self.note(label, &run_line(run, cached));
    }

    pub fn finish_project(&self, label: &str, message: &str) {
        self.bar.inc(1);
        let line = format!(
            "[{:>5.0}s] {}/{} projects  {label}: {message}",
            self.started.elapsed().as_secs_f64(),
            self.bar.position(),
            self.bar.length().unwrap_or(0)
        );
        match self.output {
            Output::Terminal => self.bar.println(line),
            Output::Log => eprintln!("{line}"),
            Output::Quiet => {}
        }
        if self.bar.length() == Some(self.bar.position()) {
            self.bar.finish_and_clear();
        }
    }
}

/// One suite run in a line: its counts, activation and time.
pub fn run_line(run: &SuiteRun, cached: bool) -> String {
    let counts = Counts::of(&run.tests);
    let mut message = format!(
        "{} → {}: {} passed, {} failed, {} errors, {} skipped",
        run.mode,
        plural(counts.total(), "test", "tests"),
        counts.passed,
        counts.failed,
        counts.errors,
        counts.skipped
    );
    if counts.timeouts + counts.hung > 0 {
        message += &format!(", {} timed out, {} hung", counts.timeouts, counts.hung);
    }
    if counts.crashed > 0 {
        message += &format!(", {} crashed", counts.crashed);
    }
    if let Some(activation) = &run.activation {
        message += &format!(
            " [asyncbis tasks {} in {}]",
            activation.tasks,
            plural(activation.processes, "process", "processes")
        );
    }
    message += &if cached {
        " (cached)".to_string()
    } else {
        format!(" in {:.1}s", run.wall_seconds)
    };
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_counts_projects_forward_only() {
        let progress = Progress::with_output(3, Output::Quiet);
        assert_eq!(progress.finished(), 0);
        progress.note("a py3.12", "rerunning 5 newly failing tests alone");
        progress.finish_project("a py3.12", "done");
        assert_eq!(progress.finished(), 1);
        progress.note("b py3.12", "11 tests with level-cancellation off");
        assert_eq!(progress.finished(), 1);
        progress.finish_project("b py3.12", "done");
        progress.finish_project("c py3.12", "done");
        assert_eq!((progress.finished(), progress.bar.length()), (3, Some(3)));
    }

    #[test]
    fn quiet_wins_over_a_terminal() {
        assert_eq!(Output::detect(true), Output::Quiet);
    }
}

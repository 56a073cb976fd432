//! One project's study: prepare, run stock twice and under asyncbis, attribute new failures.

use crate::analysis::{
    self, ActivationVerdict, Attribution, Probe, RerunOutcomes, Round, HARNESS_SWITCH, MAX_ROUNDS,
    SWITCHES,
};
use crate::cache::{short_hash, Cache, Mode, RunKey};
use crate::environment::{self, Python, Venv};
use crate::manifest::ProjectEntry;
use crate::process::{read_tail, run_capped_with_marker, tail, Stall, LINGER_GRACE};
use crate::progress::Progress;
use crate::results::{parse_junit, parse_recorder, Counts, Ending, Outcome, TestRecord};
use crate::services::Services;
use crate::signature::{self, Context, Signature};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Bumped when asyncbis runs and reruns are made differently (their cached results are then
/// not reused): v2 = sessions of their own for tests a session left unrun, held-off switches;
/// v3 = tests no session starts get a not-started record.
const RERUNS_VERSION: &str = "reruns-v3";
/// Node ids per pytest invocation when rerunning selected tests (keeps command lines short).
const RERUN_BATCH: usize = 150;
/// pytest's exit status for a usage error, which is also how it ends when a node id given on
/// the command line is not found (and then it runs none of the others).
const PYTEST_USAGE_ERROR: i32 = 4;

/// The test files of some node ids (`path::Class::test[param]` -> `path`), each once, in order.
fn file_targets(targets: &[String]) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for target in targets {
        let file = target.split("::").next().unwrap_or(target).to_string();
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files
}

/// Proof that a run happened on asyncbis: totals of the per-process stats files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    pub processes: usize,
    pub tasks: u64,
    pub loops: u64,
    pub disabled: Vec<String>,
    pub asyncbis_version: Option<String>,
    pub python: Option<String>,
}

impl Activation {
    pub fn is_activated(&self) -> bool {
        self.tasks > 0
    }
}

/// Sums `<pid>.json` stats files written by asyncbis's activation hook.
pub fn read_activation(dir: &Path) -> Activation {
    let mut activation = Activation::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return activation;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        activation.processes += 1;
        activation.tasks += value["tasks"].as_u64().unwrap_or(0);
        activation.loops += value["loops"].as_u64().unwrap_or(0);
        if let Some(disabled) = value["disabled"].as_array() {
            for name in disabled.iter().filter_map(|v| v.as_str()) {
                if !activation.disabled.iter().any(|d| d == name) {
                    activation.disabled.push(name.to_string());
                }
            }
        }
        activation.asyncbis_version = activation
            .asyncbis_version
            .or(value["asyncbis"].as_str().map(String::from));
        activation.python = activation
            .python
            .or(value["python"].as_str().map(String::from));
    }
    activation
}

/// One pytest session (or several batches of one selection), as stored in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteRun {
    pub mode: String,
    pub tests: BTreeMap<String, TestRecord>,
    pub exit_status: Option<i32>,
    /// A session was killed at the suite's wall-clock cap.
    pub killed_at_cap: bool,
    /// A session was killed by the stall watchdog (nothing recorded for too long).
    #[serde(default)]
    pub stalled: bool,
    /// pytest finished but the process had to be interrupted to exit (leftover workers).
    #[serde(default)]
    pub lingered: bool,
    /// Why a test of this run that never started did not run (how its session ended).
    #[serde(default)]
    pub not_run_reason: String,
    pub wall_seconds: f64,
    pub activation: Option<Activation>,
    /// Where the tests ran (frames under it are the project's tree).
    pub tree: String,
    pub output_tail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub mode: String,
    pub counts: Counts,
    pub wall_seconds: f64,
    pub exit_status: Option<i32>,
    pub killed_at_cap: bool,
    #[serde(default)]
    pub stalled: bool,
    pub activation: Option<Activation>,
}

impl RunSummary {
    fn of(run: &SuiteRun) -> RunSummary {
        RunSummary {
            mode: run.mode.clone(),
            counts: Counts::of(&run.tests),
            wall_seconds: run.wall_seconds,
            exit_status: run.exit_status,
            killed_at_cap: run.killed_at_cap,
            stalled: run.stalled,
            activation: run.activation.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Compared (or, with --stock-only, baselined).
    Ok,
    Skipped,
    SetupFailed,
    /// The stock suite itself did not run (no tests recorded).
    StockBroken,
    /// Under asyncbis no process created an asyncbis task: an error, never a pass.
    NotActivated,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewFailure {
    pub nodeid: String,
    pub outcome: Outcome,
    pub phase: String,
    pub signature: Signature,
    /// The raw exception type (leaf of a group) for the report.
    pub attribution: Option<Attribution>,
    /// Outcome of each attribution rerun, by run label.
    pub reruns: BTreeMap<String, Option<Outcome>>,
    pub traceback: String,
    /// The run the signature and traceback come from when not the all-switches-on run: the
    /// one that shows the test's own failure (a switch that broke its harness held off), or
    /// its first run for a test that did not run there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_run: Option<String>,
}

/// A test that passed on stock and never started under asyncbis because an earlier test ended
/// its session. Not a failure: rerun alone in a fresh session it passed or was skipped (one
/// that fails there, or cannot start even there, is newly failing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotRunTest {
    pub nodeid: String,
    /// Why it did not run in the asyncbis run.
    pub reason: String,
    /// Its outcome rerun in a session of its own (`None`: that rerun could not be made).
    pub alone: Option<Outcome>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectResult {
    pub name: String,
    pub version: String,
    pub python: String,
    pub status: Status,
    pub reason: Option<String>,
    /// Something worth knowing about a compared project (e.g. activation without tasks).
    #[serde(default)]
    pub note: Option<String>,
    /// Exact versions installed in the project's venv.
    pub installed: BTreeMap<String, String>,
    pub runs: Vec<RunSummary>,
    pub flaky: Vec<String>,
    pub newly_passing: Vec<String>,
    pub failures: Vec<NewFailure>,
    /// Passed on stock, did not run under asyncbis (not counted as newly failing).
    #[serde(default)]
    pub not_run: Vec<NotRunTest>,
    /// The patches applied to the project before its runs (a port), with their size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<AppliedPatch>,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedPatch {
    pub file: String,
    pub lines_added: usize,
    pub lines_removed: usize,
}

impl ProjectResult {
    fn new(entry: &ProjectEntry, python: &Python) -> ProjectResult {
        ProjectResult {
            name: entry.name.clone(),
            version: entry.version.clone(),
            python: python.version.clone(),
            status: Status::Ok,
            reason: None,
            note: None,
            installed: BTreeMap::new(),
            runs: Vec::new(),
            flaky: Vec::new(),
            newly_passing: Vec::new(),
            failures: Vec::new(),
            not_run: Vec::new(),
            patches: entry
                .patches
                .iter()
                .map(|patch| {
                    let text = std::fs::read_to_string(patch).unwrap_or_default();
                    let (lines_added, lines_removed) = patch_size(&text);
                    AppliedPatch {
                        file: patch
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        lines_added,
                        lines_removed,
                    }
                })
                .collect(),
            wall_seconds: 0.0,
        }
    }
    fn stop(mut self, status: Status, reason: String) -> ProjectResult {
        self.status = status;
        self.reason = Some(reason);
        self
    }
}

/// Where a project's code comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Pypi,
    /// `check PATH`: a local project directory.
    Local(PathBuf),
}

/// What every project of one study shares.
pub struct Study {
    pub cache: Cache,
    pub host: Python,
    pub uv: PathBuf,
    pub services: Services,
    /// The asyncbis wheel (and its content hash) per Python version; `None` = stock only.
    pub wheels: BTreeMap<String, (PathBuf, String)>,
    pub stock_only: bool,
    /// Switches off in every asyncbis run (e.g. no-loop-policies, so that test harnesses keep
    /// working and deeper breakage shows); attribution then covers the others.
    pub always_off: Vec<String>,
    /// The asyncbis profile of every asyncbis run (`ASYNCBIS_PROFILE`); `None`: the seed's
    /// defaults. One-switch-off probes start from the profile's values.
    pub profile: Option<String>,
    /// `name=value` switch values on top of the profile in every asyncbis run
    /// (`ASYNCBIS_SWITCHES`, leaving out the switch a probe turns off).
    pub switch_values: Vec<String>,
    pub progress: Progress,
}

impl Study {
    pub fn run_project(
        &self,
        entry: &ProjectEntry,
        source: &Source,
        python: &Python,
    ) -> ProjectResult {
        let started = std::time::Instant::now();
        let label = format!("{} py{}", entry.id(), python.version);
        let mut result = self.run_project_inner(entry, source, python, &label);
        result.wall_seconds = started.elapsed().as_secs_f64();
        let verdict = match (&result.status, &result.reason) {
            (Status::Ok, _) => format!(
                "done: {} newly failing, {} not run, {} flaky ({:.0}s)",
                result.failures.len(),
                result.not_run.len(),
                result.flaky.len(),
                result.wall_seconds
            ),
            (status, reason) => format!("{status:?}: {}", reason.as_deref().unwrap_or("")),
        };
        self.progress.finish_project(&label, &verdict);
        result
    }

    fn run_project_inner(
        &self,
        entry: &ProjectEntry,
        source: &Source,
        python: &Python,
        label: &str,
    ) -> ProjectResult {
        let result = ProjectResult::new(entry, python);
        if let Some(reason) = &entry.skip {
            return result.stop(Status::Skipped, reason.clone());
        }
        let service_env = match self.services.ensure(&entry.services) {
            Ok(env) => env,
            Err(reason) => return result.stop(Status::Skipped, reason),
        };
        let wheel = self.wheels.get(&python.version);
        if wheel.is_none() && !self.stock_only {
            return result.stop(
                Status::SetupFailed,
                format!("no asyncbis wheel for Python {}", python.version),
            );
        }
        self.progress.note(label, "preparing venv");
        let prepared = self.prepare(entry, source, python);
        let (tree, venv) = match prepared {
            Ok(ready) => ready,
            Err(reason) => return result.stop(Status::SetupFailed, reason),
        };
        if let Some((wheel_path, wheel_hash)) = wheel {
            if let Err(reason) =
                environment::ensure_wheel(&self.uv, &venv.dir, wheel_path, wheel_hash)
            {
                return result.stop(Status::SetupFailed, reason);
            }
        }
        let mut result = result;
        result.installed = match environment::freeze(&self.uv, &venv) {
            Ok(installed) => installed,
            Err(reason) => return result.stop(Status::SetupFailed, reason),
        };
        let configured = self.profile.is_some() || !self.switch_values.is_empty();
        let profile_off = match wheel {
            Some(_) if configured => {
                match configured_off(&venv, self.profile.as_deref(), &self.switch_values) {
                    Ok(off) => off,
                    Err(reason) => return result.stop(Status::SetupFailed, reason),
                }
            }
            _ => Vec::new(),
        };
        let runner = SuiteRunner {
            study: self,
            entry,
            python,
            tree: &tree,
            venv: &venv,
            service_env: &service_env,
            entry_fingerprint: entry_fingerprint(entry, source),
            // Asyncbis runs under a profile or --set values are other runs, and so are runs
            // made by another way of rerunning (stock runs are shared).
            wheel_fingerprint: match wheel {
                Some((_, hash)) if configured => short_hash(&[
                    hash,
                    "profile",
                    self.profile.as_deref().unwrap_or("seed"),
                    &self.switch_values.join(","),
                    RERUNS_VERSION,
                ]),
                Some((_, hash)) => format!("{hash}-{RERUNS_VERSION}"),
                None => String::new(),
            },
            profile_off,
            stock_durations: std::cell::RefCell::new(BTreeMap::new()),
            label,
        };
        self.progress.note(label, "stock run 1");
        let stock_first = match runner.run(&Mode::Stock { attempt: 1 }, &[]) {
            Ok(run) => run,
            Err(reason) => return result.stop(Status::SetupFailed, reason),
        };
        result.runs.push(RunSummary::of(&stock_first));
        *runner.stock_durations.borrow_mut() = stock_first
            .tests
            .iter()
            .map(|(id, record)| (id.clone(), record.duration))
            .collect();
        if stock_first.tests.is_empty() {
            let reason = format!(
                "the stock suite recorded no tests: {}",
                stock_first.output_tail
            );
            return result.stop(Status::StockBroken, reason);
        }
        self.progress.note(label, "stock run 2");
        let stock_second = match runner.run(&Mode::Stock { attempt: 2 }, &[]) {
            Ok(run) => run,
            Err(reason) => return result.stop(Status::SetupFailed, reason),
        };
        result.runs.push(RunSummary::of(&stock_second));
        if self.stock_only {
            let comparison = analysis::compare(
                &stock_first.tests,
                &stock_second.tests,
                &stock_second.tests,
                &entry.flaky,
            );
            result.flaky = comparison.flaky;
            return result;
        }
        self.progress.note(label, "asyncbis run");
        let all_on = Mode::Asyncbis {
            disabled: self.always_off.clone(),
        };
        let under_asyncbis = match runner.run(&all_on, &[]) {
            Ok(run) => run,
            Err(reason) => return result.stop(Status::SetupFailed, reason),
        };
        result.runs.push(RunSummary::of(&under_asyncbis));
        let comparison = analysis::compare(
            &stock_first.tests,
            &stock_second.tests,
            &under_asyncbis.tests,
            &entry.flaky,
        );
        let activation = under_asyncbis.activation.clone().unwrap_or_default();
        let mut activation_from_reruns = false;
        match analysis::judge_activation(
            activation.processes,
            activation.tasks,
            comparison.newly_failing.len() + comparison.not_run.len(),
            under_asyncbis.killed_at_cap || under_asyncbis.stalled,
        ) {
            ActivationVerdict::Activated => {}
            ActivationVerdict::KilledBeforeStats => activation_from_reruns = true,
            ActivationVerdict::PatchedButNoTask => {
                result.note = Some(format!(
                    "asyncbis was active ({} processes) but created no task: the tests failed before their first task (typically in the harness)",
                    activation.processes
                ));
            }
            ActivationVerdict::HookNeverRan => {
                let reason =
                    "no Python process wrote asyncbis stats (the activation hook did not run)";
                return result.stop(Status::NotActivated, reason.to_string());
            }
            ActivationVerdict::NoTaskNoChange => {
                let reason = format!(
                    "{} Python processes reported 0 asyncbis tasks and nothing changed",
                    activation.processes
                );
                return result.stop(Status::NotActivated, reason);
            }
        }
        result.flaky = comparison.flaky;
        result.newly_passing = comparison.newly_passing;
        let mut packages = signature::guess_packages(&entry.name);
        packages.extend(environment::top_level_packages(&venv.python, &entry.name));
        let context = Context {
            tree: &under_asyncbis.tree,
            packages: &packages,
        };
        let mut failures: Vec<NewFailure> = comparison
            .newly_failing
            .iter()
            .map(|record| NewFailure {
                nodeid: record.nodeid.clone(),
                outcome: record.outcome,
                phase: record.phase.clone(),
                signature: signature::signature_of(record, &context),
                attribution: None,
                reruns: BTreeMap::new(),
                traceback: record.longrepr.clone(),
                signature_run: None,
            })
            .collect();
        let not_run: Vec<(String, String)> = comparison
            .not_run
            .iter()
            .map(|id| (id.clone(), under_asyncbis.not_run_reason.clone()))
            .collect();
        let mut reruns = Activation::default();
        if !failures.is_empty() || !not_run.is_empty() {
            (result.not_run, reruns) = self.attribute(&runner, &mut failures, not_run, &packages);
        }
        if let Some(note) = startup_note(&under_asyncbis, &failures) {
            result.note = Some(match result.note.take() {
                Some(activation_note) => format!("{note} ({activation_note})"),
                None => note,
            });
        }
        result.failures = failures;
        if activation_from_reruns {
            if reruns.processes == 0 {
                let reason = "no Python process wrote asyncbis stats (the asyncbis run was killed before its exit handlers ran, and no rerun wrote any)";
                return result.stop(Status::NotActivated, reason.to_string());
            }
            result.note = Some(format!(
                "the asyncbis run was killed (stall watchdog or cap) before its processes wrote asyncbis stats; the reruns did: {} processes, {} asyncbis tasks",
                reruns.processes, reruns.tasks
            ));
        }
        result
    }

    fn prepare(
        &self,
        entry: &ProjectEntry,
        source: &Source,
        python: &Python,
    ) -> Result<(PathBuf, Venv), String> {
        let root = self.cache.root();
        let tree = match source {
            Source::Pypi => {
                environment::fetch_sdist(&self.host, root, &entry.name, &entry.version)?
            }
            Source::Local(path) => path.clone(),
        };
        let (tree, venv_name) = run_tree(root, tree, entry, &python.version)?;
        let venv_dir = root.join("venvs").join(venv_name);
        // A local project is reinstalled every time (its code changes); PyPI pins never are.
        let freshness = match source {
            Source::Pypi => String::new(),
            Source::Local(_) => format!("{:?}", std::time::SystemTime::now()),
        };
        let fingerprint = short_hash(&[
            &entry.install.join("\u{1}"),
            &python.path.to_string_lossy(),
            &freshness,
            "v1",
        ]);
        let venv = environment::prepare_venv(
            &self.uv,
            python,
            &venv_dir,
            &tree,
            &entry.install,
            &fingerprint,
        )?;
        Ok((tree, venv))
    }

    /// Attribution reruns. First all newly failing tests and the tests that did not run are
    /// rerun alone with every switch on (a test that did not run gets its own outcome there:
    /// failing makes it newly failing, anything else keeps it "not run", which is returned).
    /// Then one switch off at a time, the harness switch first; a switch whose probe gets a
    /// test past the setup phase it failed in broke the test's harness and hid its real
    /// failure, so the probes are made again with it held off. Tests that time out or hang
    /// are probed by groups of switches (see `analysis::split_group`). Tests no single switch
    /// fixes are rerun with all switches off, and those that then pass with one switch on at
    /// a time.
    fn attribute(
        &self,
        runner: &SuiteRunner,
        failures: &mut Vec<NewFailure>,
        not_run: Vec<(String, String)>,
        packages: &[String],
    ) -> (Vec<NotRunTest>, Activation) {
        let always_off = self.always_off.clone();
        let with = |extra: &[String]| -> Vec<String> {
            let mut disabled = always_off.clone();
            disabled.extend(extra.iter().filter(|s| !always_off.contains(s)).cloned());
            disabled
        };
        let mut prober = Prober {
            runner,
            labels: BTreeMap::new(),
            setup_failing: BTreeSet::new(),
            kept: BTreeMap::new(),
            activation: Activation::default(),
        };
        let mut selection: Vec<String> = failures.iter().map(|f| f.nodeid.clone()).collect();
        selection.extend(not_run.iter().map(|(id, _)| id.clone()));
        selection.sort();
        selection.dedup();
        runner.study.progress.note(
            runner.label,
            &format!("rerunning {} tests alone", selection.len()),
        );
        let (confirm, confirm_run) = prober.run(&with(&[]), &selection);
        // Tests that did not run: their own outcome, in sessions of their own.
        let mut not_run_tests = Vec::new();
        for (id, reason) in not_run {
            let record = confirm_run
                .as_ref()
                .and_then(|run| record_of(&run.tests, &id));
            let record = record.as_ref();
            match record {
                Some(record) if record.outcome.is_failure() => {
                    let run = confirm_run.as_ref().expect("a record comes from a run");
                    let context = Context {
                        tree: &run.tree,
                        packages,
                    };
                    failures.push(NewFailure {
                        nodeid: id.clone(),
                        outcome: record.outcome,
                        phase: record.phase.clone(),
                        signature: signature::signature_of(record, &context),
                        attribution: None,
                        reruns: BTreeMap::new(),
                        traceback: record.longrepr.clone(),
                        signature_run: Some(rerun_label(&with(&[]))),
                    });
                }
                _ => not_run_tests.push(NotRunTest {
                    alone: record.map(|r| r.outcome),
                    nodeid: id,
                    reason,
                }),
            }
        }
        failures.sort_by(|a, b| a.nodeid.cmp(&b.nodeid));
        let mut outcomes: BTreeMap<String, RerunOutcomes> = failures
            .iter()
            .map(|f| {
                let outcomes = RerunOutcomes {
                    confirm: confirm.get(&f.nodeid).cloned().flatten(),
                    ..Default::default()
                };
                (f.nodeid.clone(), outcomes)
            })
            .collect();
        prober.setup_failing = outcomes
            .iter()
            .filter(|(_, o)| {
                o.confirm.as_ref().is_some_and(|p| {
                    p.failed() && matches!(p.phase.as_str(), "startup" | "collect" | "setup")
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        let reproducible: Vec<String> = outcomes
            .iter()
            .filter(|(_, o)| !o.confirm.as_ref().is_some_and(Probe::passed))
            .map(|(id, _)| id.clone())
            .collect();
        // The harness switch goes first: the tests it fixes are settled (they failed in the
        // harness's policy calls before their own code ran, so no other switch can matter),
        // and the tests it gets past their setup are probed with it held off from then on.
        if !runner.held_off(HARNESS_SWITCH) && !reproducible.is_empty() {
            runner.study.progress.note(
                runner.label,
                &format!("{} tests with {HARNESS_SWITCH} off", reproducible.len()),
            );
            let (probes, _) = prober.run(&with(&[HARNESS_SWITCH.to_string()]), &reproducible);
            for id in &reproducible {
                if let Some(o) = outcomes.get_mut(id) {
                    o.rounds[0].switch_off.insert(
                        HARNESS_SWITCH.to_string(),
                        probes.get(id).cloned().flatten(),
                    );
                }
            }
        }
        loop {
            // (held off, switches left to probe) -> (tests probed one switch at a time, tests
            // probed by groups)
            type Work = BTreeMap<(Vec<String>, Vec<String>), (Vec<String>, Vec<String>)>;
            let mut work: Work = BTreeMap::new();
            for id in &reproducible {
                let Some(o) = outcomes.get_mut(id) else {
                    continue;
                };
                if o.fixed() {
                    continue;
                }
                if o.rounds.len() < MAX_ROUNDS {
                    if let Some(switch) = o.masking_switch() {
                        let mut held_off = o
                            .rounds
                            .last()
                            .map(|r| r.held_off.clone())
                            .unwrap_or_default();
                        held_off.push(switch);
                        o.rounds.push(Round {
                            held_off,
                            ..Default::default()
                        });
                    }
                }
                let round = o.rounds.last().expect("a first round");
                let left: Vec<String> = SWITCHES
                    .iter()
                    .map(|s| s.to_string())
                    .filter(|s| {
                        !runner.held_off(s)
                            && !round.held_off.contains(s)
                            && !round.switch_off.contains_key(s)
                    })
                    .collect();
                if left.is_empty() {
                    continue;
                }
                let costly = o.is_costly();
                let entry = work.entry((round.held_off.clone(), left)).or_default();
                if costly {
                    entry.1.push(id.clone());
                } else {
                    entry.0.push(id.clone());
                }
            }
            if work.is_empty() {
                break;
            }
            for ((held_off, left), (single, grouped)) in work {
                let held_note = if held_off.is_empty() {
                    String::new()
                } else {
                    format!(" ({} held off)", held_off.join(", "))
                };
                for switch in &left {
                    if single.is_empty() {
                        break;
                    }
                    runner.study.progress.note(
                        runner.label,
                        &format!("{} tests with {switch} off{held_note}", single.len()),
                    );
                    let mut extra = held_off.clone();
                    extra.push(switch.clone());
                    let (probes, _) = prober.run(&with(&extra), &single);
                    for id in &single {
                        if let Some(round) = outcomes.get_mut(id).and_then(|o| o.rounds.last_mut())
                        {
                            round
                                .switch_off
                                .insert(switch.clone(), probes.get(id).cloned().flatten());
                        }
                    }
                }
                let mut stack = vec![(left.clone(), grouped)];
                while let Some((group, tests)) = stack.pop() {
                    if tests.is_empty() {
                        continue;
                    }
                    runner.study.progress.note(
                        runner.label,
                        &format!(
                            "{} timing-out tests with {} off{held_note}",
                            tests.len(),
                            group.join("+")
                        ),
                    );
                    let mut extra = held_off.clone();
                    extra.extend(group.iter().cloned());
                    let (probes, _) = prober.run(&with(&extra), &tests);
                    let mut descend = Vec::new();
                    for id in &tests {
                        let probe = probes.get(id).cloned().flatten();
                        let Some(round) = outcomes.get_mut(id).and_then(|o| o.rounds.last_mut())
                        else {
                            continue;
                        };
                        if group.len() == 1 {
                            round.switch_off.insert(group[0].clone(), probe);
                        } else if probe.as_ref().is_some_and(Probe::passed) {
                            descend.push(id.clone());
                        } else {
                            for switch in &group {
                                let implied = probe.clone().map(|p| Probe {
                                    by_group: true,
                                    ..p
                                });
                                round.switch_off.insert(switch.clone(), implied);
                            }
                        }
                    }
                    for half in analysis::split_group(&group).into_iter().rev() {
                        stack.push((half, descend.clone()));
                    }
                }
            }
        }
        self.repeat_passes(&mut prober, &with, &reproducible, &mut outcomes);
        let remaining: Vec<String> = analysis::needs_all_off(&outcomes);
        if !remaining.is_empty() {
            runner.study.progress.note(
                runner.label,
                &format!("{} tests with every switch off", remaining.len()),
            );
            let all: Vec<String> = SWITCHES.iter().map(|s| s.to_string()).collect();
            let (probes, _) = prober.run(&with(&all), &remaining);
            for id in &remaining {
                if let Some(o) = outcomes.get_mut(id) {
                    o.all_off = probes.get(id).cloned().flatten();
                }
            }
        }
        let combined = analysis::combinations(&outcomes);
        let candidates: Vec<String> = SWITCHES
            .iter()
            .map(|s| s.to_string())
            .filter(|s| !runner.held_off(s))
            .collect();
        // One switch on at a time, also for tests that time out: there a probe costs its
        // limit only when the switch breaks the test, which few do.
        let only = |switch: &String| -> Vec<String> {
            SWITCHES
                .iter()
                .map(|s| s.to_string())
                .filter(|s| s != switch)
                .collect()
        };
        for switch in &candidates {
            if combined.is_empty() {
                break;
            }
            runner.study.progress.note(
                runner.label,
                &format!("{} combination tests with only {switch} on", combined.len()),
            );
            let (probes, _) = prober.run(&only(switch), &combined);
            for id in &combined {
                if let Some(o) = outcomes.get_mut(id) {
                    o.only_on
                        .insert(switch.clone(), probes.get(id).cloned().flatten());
                }
            }
        }
        for failure in failures.iter_mut() {
            let Some(o) = outcomes.get(&failure.nodeid) else {
                continue;
            };
            failure.attribution = Some(analysis::attribute(o));
            // The test's own failure shows in the run that held off what broke its harness.
            if let Some(round) = o.rounds.last().filter(|_| o.rounds.len() > 1) {
                let disabled = with(&round.held_off);
                if let Some((record, tree)) = prober
                    .kept
                    .get(&(failure.nodeid.clone(), sorted(&disabled)))
                {
                    let context = Context { tree, packages };
                    failure.signature = signature::signature_of(record, &context);
                    failure.traceback = record.longrepr.clone();
                    failure.signature_run = Some(rerun_label(&disabled));
                }
            }
            failure.reruns = prober.labels.remove(&failure.nodeid).unwrap_or_default();
        }
        (not_run_tests, prober.activation)
    }
}

impl Study {
    /// Tests that more than one switch fixes alone get those probes made again, and their
    /// round's baseline (every switch on but the held-off ones) again: a switch stays in
    /// `fixed_by` only if its probe passes both times while the baseline fails again; the
    /// others were lucky passes (`intermittent`). Batched like the first probes: one rerun per
    /// (held-off switches, switch) for all the tests it concerns, and one per baseline.
    fn repeat_passes(
        &self,
        prober: &mut Prober,
        with: &dyn Fn(&[String]) -> Vec<String>,
        reproducible: &[String],
        outcomes: &mut BTreeMap<String, RerunOutcomes>,
    ) {
        // held off -> (tests to repeat, switch -> tests whose probe with it off passed)
        type Work = BTreeMap<Vec<String>, (Vec<String>, BTreeMap<String, Vec<String>>)>;
        let mut work: Work = BTreeMap::new();
        for id in reproducible {
            let Some(round) = outcomes
                .get(id)
                .and_then(|o| o.rounds.iter().find(|r| !r.first_passes().is_empty()))
            else {
                continue;
            };
            if !round.needs_repeat() {
                continue;
            }
            let entry = work.entry(round.held_off.clone()).or_default();
            entry.0.push(id.clone());
            for switch in round.first_passes() {
                entry.1.entry(switch).or_default().push(id.clone());
            }
        }
        let runner = prober.runner;
        for (held_off, (tests, by_switch)) in work {
            let held_note = if held_off.is_empty() {
                String::new()
            } else {
                format!(" ({} held off)", held_off.join(", "))
            };
            runner.study.progress.note(
                runner.label,
                &format!(
                    "{} tests fixed by several switches: every switch on again{held_note}",
                    tests.len()
                ),
            );
            let baseline = prober.run_again(&with(&held_off), &tests);
            let mut repeats: BTreeMap<String, analysis::Repeat> = tests
                .iter()
                .map(|id| {
                    let repeat = analysis::Repeat {
                        baseline_again: baseline.get(id).cloned().flatten(),
                        switch_off: BTreeMap::new(),
                    };
                    (id.clone(), repeat)
                })
                .collect();
            for (switch, switch_tests) in by_switch {
                runner.study.progress.note(
                    runner.label,
                    &format!(
                        "{} tests with {switch} off again{held_note}",
                        switch_tests.len()
                    ),
                );
                let mut extra = held_off.clone();
                extra.push(switch.clone());
                let probes = prober.run_again(&with(&extra), &switch_tests);
                for id in &switch_tests {
                    if let Some(repeat) = repeats.get_mut(id) {
                        repeat
                            .switch_off
                            .insert(switch.clone(), probes.get(id).cloned().flatten());
                    }
                }
            }
            for (id, repeat) in repeats {
                let round = outcomes
                    .get_mut(&id)
                    .and_then(|o| o.rounds.iter_mut().find(|r| !r.first_passes().is_empty()));
                if let Some(round) = round {
                    round.again = Some(repeat);
                }
            }
        }
    }
}

/// The project's note when its whole suite fails at start-up under asyncbis: the all-switches-on
/// run recorded no test, and tests did not start even alone. Otherwise the project would show
/// nothing but not-started failures, easy to miss among the others.
fn startup_note(under_asyncbis: &SuiteRun, failures: &[NewFailure]) -> Option<String> {
    if !under_asyncbis.tests.is_empty() {
        return None;
    }
    let not_started: Vec<&NewFailure> = failures
        .iter()
        .filter(|f| f.outcome == Outcome::NotStarted)
        .collect();
    // The start-up error itself: not the own failure of a test that shows once the switch
    // that broke the start-up is held off.
    let first = not_started
        .iter()
        .min_by_key(|f| f.attribution.as_ref().map_or(0, |a| a.held_off.len()))?;
    let error = &first.signature;
    Some(format!(
        "the whole suite fails at start-up under asyncbis (exit status {}): {}: {} (at {}); {} tests that pass on stock never start, not even alone, and are newly failing (not-started)",
        under_asyncbis
            .exit_status
            .map_or("none".to_string(), |s| s.to_string()),
        error.exc_type,
        error.message,
        error.frame,
        not_started.len()
    ))
}

/// A test's record in a run: its own, or the collection error of the module it lies in (its
/// module failed to import: the test failed at collection, it did not go missing).
fn record_of(tests: &BTreeMap<String, TestRecord>, id: &str) -> Option<TestRecord> {
    if let Some(record) = tests.get(id) {
        return Some(record.clone());
    }
    let collect_error = tests
        .values()
        .find(|r| r.phase == "collect" && analysis::is_inside(id, &r.nodeid))?;
    Some(TestRecord {
        nodeid: id.to_string(),
        ..collect_error.clone()
    })
}

fn sorted(items: &[String]) -> Vec<String> {
    let mut items = items.to_vec();
    items.sort();
    items
}

/// The label of an attribution rerun in a failure's `reruns`: the mode's, spelled out when the
/// mode's short label would not tell groups of switches apart.
fn rerun_label(disabled: &[String]) -> String {
    let label = Mode::Asyncbis {
        disabled: disabled.to_vec(),
    }
    .label();
    if label.ends_with("-switches") {
        format!("asyncbis-off-{}", sorted(disabled).join("+"))
    } else {
        label
    }
}

/// Runs attribution reruns and keeps what the verdicts and signatures need.
struct Prober<'r, 'a> {
    runner: &'r SuiteRunner<'a>,
    /// Per test: outcome of each rerun, by rerun label.
    labels: BTreeMap<String, BTreeMap<String, Option<Outcome>>>,
    /// Tests failing in setup (or collection) with every switch on: a rerun where such a test
    /// gets further and fails in its body shows its own failure, whose record is kept.
    setup_failing: BTreeSet<String>,
    /// (test, sorted disabled switches) -> its record in that rerun and the run's tree.
    kept: BTreeMap<(String, Vec<String>), (TestRecord, String)>,
    /// Stats of every rerun's processes, summed.
    activation: Activation,
}

impl Prober<'_, '_> {
    /// Reruns `tests` with `disabled` switches off: each test's probe (`None`: it did not run)
    /// and the run (`None`: it could not be made).
    fn run(
        &mut self,
        disabled: &[String],
        tests: &[String],
    ) -> (BTreeMap<String, Option<Probe>>, Option<SuiteRun>) {
        self.run_attempt(disabled, tests, 1)
    }

    /// The same rerun made a second time (a repeat probe), labelled `<label>-again`.
    fn run_again(
        &mut self,
        disabled: &[String],
        tests: &[String],
    ) -> BTreeMap<String, Option<Probe>> {
        self.run_attempt(disabled, tests, 2).0
    }

    fn run_attempt(
        &mut self,
        disabled: &[String],
        tests: &[String],
        attempt: u8,
    ) -> (BTreeMap<String, Option<Probe>>, Option<SuiteRun>) {
        let mode = Mode::Asyncbis {
            disabled: disabled.to_vec(),
        };
        let run = self.runner.run_attempt(&mode, tests, attempt).ok();
        if let Some(stats) = run.as_ref().and_then(|r| r.activation.as_ref()) {
            self.activation.processes += stats.processes;
            self.activation.tasks += stats.tasks;
            self.activation.loops += stats.loops;
        }
        let label = match attempt {
            1 => rerun_label(disabled),
            _ => format!("{}-again", rerun_label(disabled)),
        };
        let mut probes = BTreeMap::new();
        for id in tests {
            let record = run.as_ref().and_then(|r| record_of(&r.tests, id));
            let record = record.as_ref();
            self.labels
                .entry(id.clone())
                .or_default()
                .insert(label.clone(), record.map(|r| r.outcome));
            if let (Some(record), Some(run)) = (record, run.as_ref()) {
                let own_failure = record.outcome.is_failure()
                    && (record.phase == "call" || record.phase == "teardown");
                if own_failure && attempt == 1 && self.setup_failing.contains(id) {
                    self.kept.insert(
                        (id.clone(), sorted(disabled)),
                        (record.clone(), run.tree.clone()),
                    );
                }
            }
            probes.insert(id.clone(), record.map(|r| Probe::new(r.outcome, &r.phase)));
        }
        (probes, run)
    }
}

/// A test's rerun timeout: ten times its stock duration, at least 15 s, at most the entry's.
pub fn rerun_timeout(stock_duration: f64, entry_timeout: u64) -> u64 {
    ((stock_duration * 10.0).ceil() as u64)
        .clamp(15, entry_timeout.max(15))
        .min(entry_timeout)
}

/// The pytest invocations of a rerun: the selection grouped by rerun timeout (each test gets
/// its own, not the slowest test's: a quick test that hangs under asyncbis costs 15 s, not the
/// minute a slow sibling needs), in selection order, at most `RERUN_BATCH` node ids each.
pub fn rerun_batches(
    selection: &[String],
    stock_durations: &BTreeMap<String, f64>,
    entry_timeout: u64,
) -> Vec<(u64, Vec<String>)> {
    let mut classes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for id in selection {
        let duration = stock_durations.get(id).copied().unwrap_or(0.0);
        classes
            .entry(rerun_timeout(duration, entry_timeout))
            .or_default()
            .push(id.clone());
    }
    classes
        .into_iter()
        .flat_map(|(timeout, ids)| {
            ids.chunks(RERUN_BATCH)
                .map(|chunk| (timeout, chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The line saying why a pytest session died (an INTERNALERROR, a usage error, a conftest
/// import error), from the end of its output.
pub fn session_error(output: &str) -> Option<String> {
    prefixed_error(output).or_else(|| bare_exception_line(output))
}

/// The last line of a plain Python traceback (`pkg.SomeError: message`), for sessions that
/// died before pytest could report anything.
fn bare_exception_line(output: &str) -> Option<String> {
    output.lines().rev().map(str::trim_end).find_map(|line| {
        let (head, _) = line.split_once(": ")?;
        let is_exception = !head.is_empty()
            && head
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
            && ["Error", "Warning", "Exception", "Exit"]
                .iter()
                .any(|end| head.ends_with(end));
        is_exception.then(|| line.chars().take(300).collect())
    })
}

fn prefixed_error(output: &str) -> Option<String> {
    output.lines().rev().map(str::trim_end).find_map(|line| {
        let body = line
            .strip_prefix("INTERNALERROR> ")
            .or_else(|| line.strip_prefix("pytest: error: "))
            .or_else(|| line.strip_prefix("ERROR: "))
            .or_else(|| line.strip_prefix("E   "))?;
        let is_frame =
            body.starts_with(' ') || body.starts_with("Traceback") || body.starts_with("File ");
        (!is_frame && !body.trim().is_empty()).then(|| body.trim().chars().take(300).collect())
    })
}

/// The entry a run uses: with its patches (a port) only in a `--ported` run. Otherwise the
/// project runs as published, in the unpatched tree and venv and under the unpatched entry's
/// cache keys (shared with every other unported run).
pub fn entry_for_run(entry: &ProjectEntry, ported: bool) -> ProjectEntry {
    let mut entry = entry.clone();
    if !ported {
        entry.patches.clear();
    }
    entry
}

fn entry_fingerprint(entry: &ProjectEntry, source: &Source) -> String {
    let env: Vec<String> = entry.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let local = match source {
        Source::Pypi => String::new(),
        Source::Local(path) => path.to_string_lossy().into_owned(),
    };
    let install = entry.install.join("\u{1}");
    let pytest_args = entry.pytest_args.join("\u{1}");
    let tests = entry.tests.join("\u{1}");
    let timeout = entry.timeout.to_string();
    let suite_timeout = entry.suite_timeout.to_string();
    let env = env.join("\u{1}");
    let mut parts: Vec<&str> = vec![
        &install,
        &pytest_args,
        &tests,
        &timeout,
        &suite_timeout,
        &env,
        &local,
        // bump when the recorder or the way runs are made changes
        "runner-v2",
    ];
    // Patched projects are other runs, stock ones included (unpatched keys are unchanged).
    let patches = patch_fingerprint(&entry.patches);
    if !entry.patches.is_empty() {
        parts.push(&patches);
    }
    short_hash(&parts)
}

/// Hash of the patch files' names and contents, in order.
fn patch_fingerprint(patches: &[PathBuf]) -> String {
    let mut parts = Vec::new();
    for patch in patches {
        let name = patch
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text =
            std::fs::read_to_string(patch).unwrap_or_else(|err| format!("unreadable: {err}"));
        parts.push(name);
        parts.push(text);
    }
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    short_hash(&parts)
}

/// The tree a run of `entry` uses and the name of its venv: the unpacked sdist as it is, or,
/// for an entry with patches (a `--ported` run), another tree with them applied and another
/// venv (its own code is installed).
fn run_tree(
    cache_root: &Path,
    tree: PathBuf,
    entry: &ProjectEntry,
    python_version: &str,
) -> Result<(PathBuf, String), String> {
    if entry.patches.is_empty() {
        return Ok((tree, format!("{}-py{python_version}", entry.id())));
    }
    let patched = apply_patches(cache_root, &tree, &entry.id(), &entry.patches)?;
    let digest = patch_fingerprint(&entry.patches);
    let venv_name = format!("{}-patched-{}-py{python_version}", entry.id(), &digest[..8]);
    Ok((patched, venv_name))
}

/// A copy of `tree` with `patches` applied (`patch -p1`, in order), made once under the cache
/// (`src/<id>+patches-<hash>`); the unpacked sdist itself is left as it is.
pub fn apply_patches(
    cache_root: &Path,
    tree: &Path,
    id: &str,
    patches: &[PathBuf],
) -> Result<PathBuf, String> {
    let digest = patch_fingerprint(patches);
    let patched = cache_root
        .join("src")
        .join(format!("{id}+patches-{}", &digest[..12]));
    let marker = patched.join(".asyncbis-compat-patched");
    if marker.exists() {
        return Ok(patched);
    }
    let work = patched.with_extension("partial");
    for dir in [&patched, &work] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|err| format!("cannot clear {}: {err}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(&work)
        .map_err(|err| format!("cannot create {}: {err}", work.display()))?;
    copy_tree(tree, &work)?;
    for patch in patches {
        let output = Command::new("patch")
            .args([
                "-p1",
                "--forward",
                "--batch",
                "--no-backup-if-mismatch",
                "-i",
            ])
            .arg(patch)
            .current_dir(&work)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|err| format!("cannot run patch (is it installed?): {err}"))?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&work);
            return Err(format!(
                "patch {} does not apply to {id}: {} {}",
                patch.display(),
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    remove_stale_generated_c(&work, patches)?;
    std::fs::write(work.join(".asyncbis-compat-patched"), &digest)
        .map_err(|err| format!("cannot mark {}: {err}", work.display()))?;
    std::fs::rename(&work, &patched)
        .map_err(|err| format!("cannot move {} into place: {err}", work.display()))?;
    Ok(patched)
}

/// Removes the C file Cython generated from each `.pyx` file the patches change. Sdists ship
/// it, and setuptools builds an extension from it instead of the `.pyx` when it is there, so
/// the port would be left out of the build; without it the build runs Cython on the patched
/// source, as in a checkout of the project's repository (which has no generated C).
fn remove_stale_generated_c(tree: &Path, patches: &[PathBuf]) -> Result<(), String> {
    for patch in patches {
        let text = std::fs::read_to_string(patch)
            .map_err(|err| format!("cannot read {}: {err}", patch.display()))?;
        for pyx in patched_files(&text).filter(|f| f.ends_with(".pyx")) {
            let generated = tree.join(pyx).with_extension("c");
            if generated.is_file() {
                std::fs::remove_file(&generated)
                    .map_err(|err| format!("cannot remove {}: {err}", generated.display()))?;
            }
        }
    }
    Ok(())
}

/// The files a unified diff changes, as `patch -p1` names them (`+++ b/dir/file` -> `dir/file`).
fn patched_files(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        let path = line.strip_prefix("+++ ")?.split('\t').next()?.trim_end();
        path.split_once('/').map(|(_, rest)| rest)
    })
}

/// Lines a unified diff adds and removes (the size of a port).
pub fn patch_size(text: &str) -> (usize, usize) {
    let mut added = 0;
    let mut removed = 0;
    for line in text.lines() {
        if line.starts_with("+++") || line.starts_with("---") {
            continue;
        }
        if line.starts_with('+') {
            added += 1;
        } else if line.starts_with('-') {
            removed += 1;
        }
    }
    (added, removed)
}

/// Where one pytest invocation writes and runs.
#[derive(Clone, Copy)]
struct RunFiles<'p> {
    junit: &'p Path,
    record: &'p Path,
    stats_dir: &'p Path,
    tree: &'p Path,
}

struct SuiteRunner<'a> {
    /// Stock durations (first stock run): reruns of selected tests get per-test timeouts, a
    /// multiple of these (a level-cancelled test that hangs should not hold the rerun for the
    /// full timeout).
    stock_durations: std::cell::RefCell<BTreeMap<String, f64>>,
    study: &'a Study,
    entry: &'a ProjectEntry,
    python: &'a Python,
    tree: &'a Path,
    venv: &'a Venv,
    service_env: &'a BTreeMap<String, String>,
    entry_fingerprint: String,
    wheel_fingerprint: String,
    /// Switches the study's profile (or --set) turns off: already stock, so never probed.
    profile_off: Vec<String>,
    label: &'a str,
}

impl SuiteRunner<'_> {
    /// Off in every asyncbis run of this project (`--keep-off`, or by the profile).
    fn held_off(&self, switch: &str) -> bool {
        self.study.always_off.iter().any(|off| off == switch)
            || self.profile_off.iter().any(|off| off == switch)
    }

    /// Runs the suite (or just `selection`) in `mode`, from the cache when it has the result.
    fn run(&self, mode: &Mode, selection: &[String]) -> Result<SuiteRun, String> {
        self.run_attempt(mode, selection, 1)
    }

    /// `run`, made for the `attempt`-th time: a repeat is another run (its own cache entry),
    /// not the first one's result read back.
    fn run_attempt(
        &self,
        mode: &Mode,
        selection: &[String],
        attempt: u8,
    ) -> Result<SuiteRun, String> {
        let batches = self.batches(selection);
        let mut fingerprint = if selection.is_empty() {
            self.entry_fingerprint.clone()
        } else {
            let timeouts: Vec<String> = batches.iter().map(|(t, _)| t.to_string()).collect();
            short_hash(&[
                &self.entry_fingerprint,
                "per-test-timeouts",
                &timeouts.join(","),
            ])
        };
        if attempt > 1 {
            fingerprint = short_hash(&[&fingerprint, "attempt", &attempt.to_string()]);
        }
        let key = RunKey {
            project: &self.entry.name,
            version: &self.entry.version,
            python: &self.python.version,
            mode,
            entry_fingerprint: &fingerprint,
            wheel_fingerprint: &self.wheel_fingerprint,
            selection,
        };
        if let Some(cached) = self.study.cache.load::<SuiteRun>(&key) {
            self.study.progress.ran(self.label, &cached, true);
            return Ok(cached);
        }
        let run_dir = self
            .study
            .cache
            .root()
            .join("runs")
            .join(key.file_name().trim_end_matches(".json"));
        let run = self.run_fresh(mode, selection, batches, &run_dir)?;
        self.study.cache.store(&key, &run)?;
        self.study.progress.ran(self.label, &run, false);
        Ok(run)
    }

    /// (per-test timeout, node ids) of each pytest invocation: the whole suite at the entry's
    /// timeout, or the selection in batches by rerun timeout.
    fn batches(&self, selection: &[String]) -> Vec<(u64, Vec<String>)> {
        if selection.is_empty() {
            vec![(self.entry.timeout, self.entry.tests.clone())]
        } else {
            rerun_batches(
                selection,
                &self.stock_durations.borrow(),
                self.entry.timeout,
            )
        }
    }

    fn run_fresh(
        &self,
        mode: &Mode,
        selection: &[String],
        batches: Vec<(u64, Vec<String>)>,
        run_dir: &Path,
    ) -> Result<SuiteRun, String> {
        if run_dir.exists() {
            std::fs::remove_dir_all(run_dir)
                .map_err(|err| format!("cannot clear {}: {err}", run_dir.display()))?;
        }
        let tree = run_dir.join("tree");
        std::fs::create_dir_all(&tree)
            .map_err(|err| format!("cannot create {}: {err}", tree.display()))?;
        copy_tree(self.tree, &tree)?;
        let stats_dir = run_dir.join("stats");
        std::fs::create_dir_all(&stats_dir)
            .map_err(|err| format!("cannot create {}: {err}", stats_dir.display()))?;
        let log = run_dir.join("output.log");
        let mut lingered = false;
        let mut exit_status = None;
        let mut killed_at_cap = false;
        let mut stalled = false;
        let mut wall_seconds = 0.0;
        let mut not_run_reason = String::new();
        let mut tests: BTreeMap<String, TestRecord> = BTreeMap::new();
        let mut sessions = Sessions::new(
            batches
                .into_iter()
                .map(|(timeout, ids)| Batch {
                    timeout,
                    targets: ids.clone(),
                    ids,
                    by_files: false,
                    split: None,
                })
                .collect(),
        );
        let mut index = 0;
        while let Some(batch) = sessions.next() {
            index += 1;
            // Each session its own record: how it ended says what became of its tests.
            let record_path = run_dir.join(format!("record-{index}.jsonl"));
            let finished_marker = run_dir.join(format!("record-{index}.jsonl.finished"));
            let junit = run_dir.join(format!("junit-{index}.xml"));
            let files = RunFiles {
                junit: &junit,
                record: &record_path,
                stats_dir: &stats_dir,
                tree: &tree,
            };
            let mut command = self.pytest_command(mode, &batch.targets, batch.timeout, &files);
            let cap = Duration::from_secs(self.entry.suite_timeout);
            // Stuck beyond the per-test timeout: nothing recorded for three timeouts (and a
            // minute more while collecting, before the first record line).
            let stall_limit = batch.timeout * 3 + STALL_GRACE;
            let stall_startup = batch.timeout * 3 + 60;
            let log_offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let finished = run_capped_with_marker(
                &mut command,
                &log,
                cap,
                Some(&finished_marker),
                LINGER_GRACE,
                Some(Stall {
                    file: &record_path,
                    startup: Duration::from_secs(stall_startup),
                    limit: Duration::from_secs(stall_limit),
                }),
            )?;
            lingered |= finished.lingered;
            wall_seconds += finished.wall_seconds;
            killed_at_cap |= finished.killed_at_cap;
            stalled |= finished.stalled;
            let output = tail(&read_from(&log, log_offset), 3000);
            // (A conftest failing to import is a usage error too: rerunning by files would
            // only fail the same way.)
            if !selection.is_empty()
                && finished.code == Some(PYTEST_USAGE_ERROR)
                && !batch.by_files
                && output.contains("ERROR: not found:")
            {
                // "ERROR: not found: <node id>": pytest runs nothing of the batch. Node ids of
                // classes a plugin generates at collection (sqlalchemy's per-database test
                // classes) cannot be selected; rerun the batch's files instead, and read just
                // the requested tests from the record.
                let files = file_targets(&batch.targets);
                if files != batch.targets {
                    sessions.push(Batch {
                        targets: files,
                        by_files: true,
                        ..batch
                    });
                    continue;
                }
            }
            exit_status = exit_status.max(finished.code);
            let text = std::fs::read_to_string(&record_path).unwrap_or_default();
            let mut recorded = parse_recorder(&text);
            let ending = if finished.killed_at_cap {
                Ending::Cap(self.entry.suite_timeout)
            } else if finished.stalled {
                Ending::Stalled(if text.is_empty() {
                    stall_startup
                } else {
                    stall_limit
                })
            } else {
                Ending::Exited(finished.code, session_error(&output))
            };
            recorded.label_unfinished(&ending, &output);
            not_run_reason = ending.not_run_reason();
            // The recorder is the primary source; JUnit only covers a suite that disabled plugins.
            let session_tests = if recorded.tests.is_empty() {
                std::fs::read_to_string(&junit)
                    .ok()
                    .and_then(|xml| parse_junit(&xml).ok())
                    .unwrap_or_default()
            } else {
                recorded.tests
            };
            for (id, record) in session_tests {
                tests.entry(id).or_insert(record);
            }
            if !selection.is_empty() {
                let ended = Ended {
                    ending,
                    output,
                    tree: tree.to_string_lossy().into_owned(),
                };
                sessions.settle(batch, &tests, &ended);
            }
        }
        // Tests no session started, not even alone: the session fails at start-up.
        for (id, record) in sessions.not_started {
            tests.entry(id).or_insert(record);
        }
        let activation = matches!(mode, Mode::Asyncbis { .. }).then(|| read_activation(&stats_dir));
        // The copied tree is only needed while the tests run; logs and records stay.
        let _ = std::fs::remove_dir_all(&tree);
        Ok(SuiteRun {
            mode: mode.label(),
            tests,
            exit_status,
            killed_at_cap,
            stalled,
            lingered,
            not_run_reason,
            wall_seconds,
            activation,
            tree: tree.to_string_lossy().into_owned(),
            output_tail: read_tail(&log, 3000),
        })
    }

    fn pytest_command(
        &self,
        mode: &Mode,
        targets: &[String],
        timeout: u64,
        files: &RunFiles,
    ) -> Command {
        let RunFiles {
            junit,
            record,
            stats_dir,
            tree,
        } = *files;
        let pytest = self.venv.bin("pytest");
        let mut command = if pytest.exists() {
            Command::new(pytest)
        } else {
            let mut c = Command::new(&self.venv.python);
            c.args(["-m", "pytest"]);
            c
        };
        command
            .args(&self.entry.pytest_args)
            .args(targets)
            // One module failing to import must not abort the whole session.
            .args([
                "-p",
                "asyncbis_compat_recorder",
                "--continue-on-collection-errors",
            ])
            .args(["-o", "junit_family=xunit1"])
            .arg(format!("--junitxml={}", junit.display()))
            .arg(format!("--timeout={timeout}"))
            .current_dir(tree);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("ASYNCBIS_") || key == "PYTEST_ADDOPTS" || key == "PYTHONPATH" {
                command.env_remove(key.as_ref());
            }
        }
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .env("VIRTUAL_ENV", &self.venv.dir)
            .env(
                "PATH",
                format!("{}:{path}", self.venv.dir.join("bin").display()),
            )
            .env("ASYNCBIS_COMPAT_RECORD", record)
            .env("PY_COLORS", "0")
            .envs(self.service_env)
            .envs(&self.entry.env);
        if let Mode::Asyncbis { disabled } = mode {
            command
                .env("ASYNCBIS_AUTOPATCH", "1")
                .env("ASYNCBIS_STATS_DIR", stats_dir);
            if !disabled.is_empty() {
                command.env("ASYNCBIS_DISABLE", disabled.join(","));
            }
            if let Some(profile) = &self.study.profile {
                command.env("ASYNCBIS_PROFILE", profile);
            }
            // Applied after ASYNCBIS_DISABLE: a switch this run turns off is left out.
            let values: Vec<&str> = self
                .study
                .switch_values
                .iter()
                .filter(|v| {
                    let name = v.split('=').next().unwrap_or_default();
                    !disabled.iter().any(|d| d == name)
                })
                .map(String::as_str)
                .collect();
            if !values.is_empty() {
                command.env("ASYNCBIS_SWITCHES", values.join(","));
            }
        }
        command
    }
}

/// The switches `profile` and `values` turn off, as the asyncbis installed in `venv` defines
/// them (profiles and values live in `asyncbis.switches`; an unknown profile or value fails
/// with the list of valid ones).
fn configured_off(
    venv: &Venv,
    profile: Option<&str>,
    values: &[String],
) -> Result<Vec<String>, String> {
    let mut command = Command::new(&venv.python);
    command.args([
        "-c",
        "from asyncbis import switches as s; print(','.join(n for n in s.NAMES if not s.enabled(n)))",
    ]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ASYNCBIS_") {
            command.env_remove(key);
        }
    }
    if let Some(profile) = profile {
        command.env("ASYNCBIS_PROFILE", profile);
    }
    if !values.is_empty() {
        command.env("ASYNCBIS_SWITCHES", values.join(","));
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run {}: {err}", venv.python.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(format!(
            "asyncbis refused --profile/--set: {}",
            last.unwrap_or("(no message)").trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// Seconds without a record line, beyond three per-test timeouts, before the stall watchdog
/// kills a session that has started recording.
const STALL_GRACE: u64 = 10;

/// The text a log gained from `offset` on (one session's output).
fn read_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// One pytest session of a rerun.
#[derive(Debug, Clone, PartialEq)]
struct Batch {
    timeout: u64,
    /// The node ids wanted from it.
    ids: Vec<String>,
    /// What is passed to pytest: the ids, or their files when pytest cannot select them.
    targets: Vec<String>,
    by_files: bool,
    /// The pair of halves it belongs to, when a session that ran none of its tests was split.
    split: Option<usize>,
}

/// How one session of a rerun ended: what a test it never started gets as its record when no
/// session will start it.
struct Ended {
    ending: Ending,
    /// The session's last output (its error and traceback).
    output: String,
    /// Where it ran (relative paths in its traceback are under it).
    tree: String,
}

/// The sessions of a rerun of selected tests. A session that ends early (an INTERNALERROR, a
/// kill by the stall watchdog or at the cap, `-x`) leaves tests that never started; they are
/// run again in a fresh session, until each has its own outcome. A session that starts none of
/// its tests is split in halves; when both halves start none either (or a single test alone
/// does not start), the failure does not depend on which tests run: the session fails at
/// start-up, which is breakage. Those tests are "not started", with the session's error.
#[derive(Debug, Default)]
struct Sessions {
    queue: Vec<Batch>,
    /// Halves of a split session: how many are still to run, and those that ran no test.
    halves: BTreeMap<usize, (usize, Vec<Batch>)>,
    next_split: usize,
    /// Tests that no session started, with their `Outcome::NotStarted` record.
    not_started: BTreeMap<String, TestRecord>,
}

impl Sessions {
    fn new(mut batches: Vec<Batch>) -> Sessions {
        batches.reverse();
        Sessions {
            queue: batches,
            ..Default::default()
        }
    }

    fn next(&mut self) -> Option<Batch> {
        self.queue.pop()
    }

    fn push(&mut self, batch: Batch) {
        self.queue.push(batch);
    }

    /// After `batch` ran (`tests`: everything recorded so far): queues what it left unrun.
    fn settle(&mut self, batch: Batch, tests: &BTreeMap<String, TestRecord>, ended: &Ended) {
        let collect_errors: Vec<&String> = tests
            .values()
            .filter(|r| r.phase == "collect")
            .map(|r| &r.nodeid)
            .collect();
        let ran = |id: &String| {
            tests.contains_key(id) || collect_errors.iter().any(|c| analysis::is_inside(id, c))
        };
        let left: Vec<String> = batch.ids.iter().filter(|id| !ran(id)).cloned().collect();
        let progressed = left.len() < batch.ids.len();
        let mut fruitless = Vec::new();
        if left.is_empty() {
        } else if progressed {
            self.queue.push(Batch {
                targets: left.clone(),
                ids: left,
                by_files: false,
                split: None,
                ..batch.clone()
            });
        } else {
            fruitless.push(Batch {
                ids: left,
                ..batch.clone()
            });
        }
        match batch.split {
            None => {
                for unrun in fruitless {
                    self.split(unrun, ended);
                }
            }
            Some(pair) => {
                let (pending, unrun) = self.halves.entry(pair).or_default();
                *pending -= 1;
                unrun.extend(fruitless);
                if *pending == 0 {
                    let (_, unrun) = self.halves.remove(&pair).unwrap_or_default();
                    if unrun.len() == 2 {
                        for batch in unrun {
                            self.give_up(&batch, ended);
                        }
                    } else {
                        for batch in unrun {
                            self.split(batch, ended);
                        }
                    }
                }
            }
        }
    }

    fn split(&mut self, batch: Batch, ended: &Ended) {
        if batch.ids.len() < 2 {
            self.give_up(&batch, ended);
            return;
        }
        let pair = self.next_split;
        self.next_split += 1;
        let middle = batch.ids.len().div_ceil(2);
        self.halves.insert(pair, (2, Vec::new()));
        for half in [&batch.ids[middle..], &batch.ids[..middle]] {
            self.queue.push(Batch {
                timeout: batch.timeout,
                ids: half.to_vec(),
                targets: half.to_vec(),
                by_files: false,
                split: Some(pair),
            });
        }
    }

    fn give_up(&mut self, batch: &Batch, ended: &Ended) {
        for id in &batch.ids {
            let record = ended.ending.not_started(id, &ended.output, &ended.tree);
            self.not_started.insert(id.clone(), record);
        }
    }
}

/// Copies a project tree, leaving out VCS data and virtualenvs (local `check` projects).
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let script = "tar -C \"$1\" --exclude=./.git --exclude=./.venv --exclude=./.tox --exclude=./node_modules -cf - . | tar -C \"$2\" -xf -";
    let status = Command::new("sh")
        .args(["-c", script, "copy"])
        .arg(from)
        .arg(to)
        .status()
        .map_err(|err| format!("cannot copy {}: {err}", from.display()))?;
    if !status.success() {
        return Err(format!(
            "copying {} to {} failed",
            from.display(),
            to.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_fall_back_to_their_files() {
        let targets: Vec<String> = [
            "test/ext/asyncio/test_cancellation.py::AsyncCancellationTest_sqlite+aiosqlite::test_a",
            "test/ext/asyncio/test_cancellation.py::RunToCompletionTest::test_cancelled[1]",
            "test/ext/asyncio/test_engine.py::test_b",
            "tests/plain.py",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            file_targets(&targets),
            vec![
                "test/ext/asyncio/test_cancellation.py",
                "test/ext/asyncio/test_engine.py",
                "tests/plain.py"
            ]
        );
    }

    #[test]
    fn rerun_timeouts_follow_stock_durations() {
        assert_eq!(rerun_timeout(0.2, 60), 15);
        assert_eq!(rerun_timeout(4.5, 60), 45);
        assert_eq!(rerun_timeout(30.0, 60), 60);
        assert_eq!(rerun_timeout(0.2, 5), 5);
    }

    #[test]
    fn rerun_batches_give_each_test_its_own_timeout() {
        let ids: Vec<String> = ["slow", "a", "b", "unknown", "mid"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let durations: BTreeMap<String, f64> = [
            ("slow".to_string(), 10.0),
            ("a".to_string(), 0.01),
            ("b".to_string(), 1.2),
            ("mid".to_string(), 3.0),
        ]
        .into();
        let batches = rerun_batches(&ids, &durations, 60);
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            batches,
            vec![
                (15, strings(&["a", "b", "unknown"])),
                (30, strings(&["mid"])),
                (60, strings(&["slow"])),
            ]
        );
        // Large classes are split into pytest invocations of at most RERUN_BATCH node ids.
        let many: Vec<String> = (0..RERUN_BATCH * 2 + 1).map(|i| format!("t{i}")).collect();
        let batches = rerun_batches(&many, &BTreeMap::new(), 60);
        let sizes: Vec<usize> = batches.iter().map(|(_, ids)| ids.len()).collect();
        assert_eq!(sizes, vec![RERUN_BATCH, RERUN_BATCH, 1]);
        assert!(batches.iter().all(|(timeout, _)| *timeout == 15));
        // Every test is run once, none lost.
        let total: usize = batches.iter().map(|(_, ids)| ids.len()).sum();
        assert_eq!(total, many.len());
    }

    /// A session that exited with a conftest import error.
    fn ended(error: &str) -> Ended {
        Ended {
            ending: Ending::Exited(Some(4), Some(format!("RuntimeError: {error}"))),
            output: format!(
                "tests/conftest.py:3: in <module>\n    boom()\nE   RuntimeError: {error}"
            ),
            tree: "/run/tree".into(),
        }
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn ran(tests: &mut BTreeMap<String, TestRecord>, names: &[&str]) {
        for name in names {
            tests.insert(
                name.to_string(),
                TestRecord {
                    nodeid: name.to_string(),
                    outcome: Outcome::Passed,
                    phase: "call".into(),
                    duration: 0.0,
                    exception: None,
                    longrepr: String::new(),
                },
            );
        }
    }

    #[test]
    fn tests_a_session_left_unrun_get_sessions_of_their_own() {
        let batch = |names: &[&str]| Batch {
            timeout: 15,
            ids: ids(names),
            targets: ids(names),
            by_files: false,
            split: None,
        };
        let mut sessions = Sessions::new(vec![batch(&["a", "b", "c", "d", "e"]), batch(&["z"])]);
        let mut tests = BTreeMap::new();
        // The first session dies in `a`: the rest go to a fresh session, before the next batch.
        let first = sessions.next().unwrap();
        assert_eq!(first.ids, ids(&["a", "b", "c", "d", "e"]));
        ran(&mut tests, &["a"]);
        sessions.settle(first, &tests, &ended("died in a"));
        let second = sessions.next().unwrap();
        assert_eq!(second.ids, ids(&["b", "c", "d", "e"]));
        assert_eq!(second.timeout, 15);
        ran(&mut tests, &["b", "c"]);
        sessions.settle(second, &tests, &ended("died in c"));
        // `d` and `e` run nothing at all: split in halves.
        let third = sessions.next().unwrap();
        assert_eq!(third.ids, ids(&["d", "e"]));
        sessions.settle(third, &tests, &ended("dies at start-up"));
        let (left, right) = (sessions.next().unwrap(), sessions.next().unwrap());
        assert_eq!(
            (left.ids.clone(), right.ids.clone()),
            (ids(&["d"]), ids(&["e"]))
        );
        assert!(left.split.is_some() && left.split == right.split);
        sessions.settle(left, &tests, &ended("dies at start-up"));
        assert!(sessions.not_started.is_empty(), "waits for the other half");
        sessions.settle(right, &tests, &ended("dies at start-up"));
        // Neither half ran: the failure does not depend on the selection.
        assert_eq!(
            sessions.not_started.keys().cloned().collect::<Vec<_>>(),
            ids(&["d", "e"])
        );
        let d = &sessions.not_started["d"];
        assert_eq!(
            (d.outcome, d.phase.as_str()),
            (Outcome::NotStarted, "startup")
        );
        let error = d.exception.clone().unwrap_or_default();
        assert_eq!(error.exc_type, "RuntimeError");
        assert_eq!(error.message, "dies at start-up");
        assert_eq!(error.frames[0].file, "/run/tree/tests/conftest.py");
        assert!(d
            .longrepr
            .contains("session start-up failed (exit status 4)"));
        let last = sessions.next().unwrap();
        assert_eq!(last.ids, ids(&["z"]));
        ran(&mut tests, &["z"]);
        sessions.settle(last, &tests, &ended(""));
        assert!(sessions.next().is_none());
    }

    #[test]
    fn a_test_whose_module_fails_to_import_has_the_collection_error_as_its_record() {
        let mut tests = BTreeMap::new();
        ran(&mut tests, &["m.py::ok"]);
        let broken = TestRecord {
            nodeid: "pkg/broken.py".into(),
            outcome: Outcome::Error,
            phase: "collect".into(),
            duration: 0.0,
            exception: None,
            longrepr: "E   RuntimeError: no loop".into(),
        };
        tests.insert(broken.nodeid.clone(), broken);
        let own = record_of(&tests, "m.py::ok").unwrap();
        assert_eq!(
            (own.nodeid.as_str(), own.outcome),
            ("m.py::ok", Outcome::Passed)
        );
        let inside = record_of(&tests, "pkg/broken.py::Test::test_x[1]").unwrap();
        assert_eq!(inside.nodeid, "pkg/broken.py::Test::test_x[1]");
        assert_eq!(
            (inside.outcome, inside.phase.as_str()),
            (Outcome::Error, "collect")
        );
        assert_eq!(inside.longrepr, "E   RuntimeError: no loop");
        // Not a prefix match: another module is not inside it.
        assert!(record_of(&tests, "pkg/broken.py2::test_y").is_none());
        assert!(record_of(&tests, "m.py::missing").is_none());
    }

    #[test]
    fn a_test_that_kills_its_session_early_is_isolated_by_halving() {
        let mut sessions = Sessions::new(vec![Batch {
            timeout: 15,
            ids: ids(&["a", "b", "c", "d"]),
            targets: ids(&["a", "b", "c", "d"]),
            by_files: false,
            split: None,
        }]);
        let mut tests = BTreeMap::new();
        // A test kills the session before anything is recorded whenever `c` is selected.
        let mut sessions_run = 0;
        while let Some(batch) = sessions.next() {
            sessions_run += 1;
            assert!(sessions_run < 20, "does not end");
            if !batch.ids.contains(&"c".to_string()) {
                let names: Vec<&str> = batch.ids.iter().map(String::as_str).collect();
                ran(&mut tests, &names);
            }
            sessions.settle(batch, &tests, &ended("c kills it"));
        }
        assert_eq!(
            tests.keys().cloned().collect::<Vec<_>>(),
            ids(&["a", "b", "d"])
        );
        assert_eq!(
            sessions.not_started.keys().cloned().collect::<Vec<_>>(),
            ids(&["c"])
        );
        // A collection error accounts for the tests of its module.
        let mut sessions = Sessions::new(vec![Batch {
            timeout: 15,
            ids: ids(&["m.py::t1", "m.py::t2"]),
            targets: ids(&["m.py::t1", "m.py::t2"]),
            by_files: false,
            split: None,
        }]);
        let mut tests = BTreeMap::new();
        ran(&mut tests, &["m.py"]);
        tests.get_mut("m.py").unwrap().phase = "collect".into();
        let batch = sessions.next().unwrap();
        sessions.settle(batch, &tests, &ended(""));
        assert!(sessions.next().is_none() && sessions.not_started.is_empty());
    }

    #[test]
    fn rerun_labels_tell_groups_of_switches_apart() {
        assert_eq!(
            rerun_label(&ids(&["inline-shield"])),
            "asyncbis-off-inline-shield"
        );
        assert_eq!(
            rerun_label(&ids(&["sniffio-name", "inline-shield", "graceful-signals"])),
            "asyncbis-off-graceful-signals+inline-shield+sniffio-name"
        );
        let all: Vec<String> = SWITCHES.iter().map(|s| s.to_string()).collect();
        assert_eq!(rerun_label(&all), "asyncbis-all-off");
    }

    #[test]
    fn a_patched_pyx_loses_its_generated_c_and_nothing_else_does() {
        let root = std::env::temp_dir().join(format!("asyncbis-compat-pyx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let tree = root.join("tree");
        std::fs::create_dir_all(tree.join("pkg")).unwrap();
        for (name, text) in [
            (
                "pkg/proto.pyx",
                "async def wait(fut):\n    await shield(fut)\n",
            ),
            ("pkg/proto.c", "/* generated from proto.pyx */\n"),
            ("pkg/other.pyx", "x = 1\n"),
            ("pkg/other.c", "/* generated from other.pyx */\n"),
            ("pkg/helper.c", "/* hand-written */\n"),
        ] {
            std::fs::write(tree.join(name), text).unwrap();
        }
        let patch = root.join("01-wait.patch");
        std::fs::write(
            &patch,
            "header text\n--- a/pkg/proto.pyx\t2026-12-07\n+++ b/pkg/proto.pyx\t2026-12-07\n\
             @@ -1,2 +1,2 @@\n async def wait(fut):\n-    await shield(fut)\n+    await wait((fut,))\n",
        )
        .unwrap();
        let patched = apply_patches(&root.join("cache"), &tree, "pkg-1.0", &[patch]).unwrap();
        let code = std::fs::read_to_string(patched.join("pkg/proto.pyx")).unwrap();
        assert!(code.contains("await wait((fut,))"), "{code}");
        assert!(!patched.join("pkg/proto.c").exists());
        // What the patches do not touch stays, generated or not; the sdist keeps everything.
        assert!(patched.join("pkg/other.c").exists());
        assert!(patched.join("pkg/helper.c").exists());
        assert!(tree.join("pkg/proto.c").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn manifest_patches_are_applied_to_a_copy_of_the_sdist() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/compat_patch");
        let corpus = crate::manifest::load_corpus(&fixture.join("corpus.toml")).unwrap();
        let entry = &corpus.projects[0];
        let names: Vec<String> = entry
            .patches
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["01-shield-cleanup.patch", "02-version.patch"]);
        let cache =
            std::env::temp_dir().join(format!("asyncbis-compat-patch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let original = fixture.join("project");
        let patched = apply_patches(&cache, &original, &entry.id(), &entry.patches).unwrap();
        let code = std::fs::read_to_string(patched.join("port_me/__init__.py")).unwrap();
        assert!(
            code.contains("await asyncio.shield(close(resource))"),
            "{code}"
        );
        let meta = std::fs::read_to_string(patched.join("pyproject.toml")).unwrap();
        assert!(meta.contains("1.0+asyncbis"));
        // The unpacked sdist itself is untouched; a second study reuses the patched copy.
        let untouched = std::fs::read_to_string(original.join("port_me/__init__.py")).unwrap();
        assert!(!untouched.contains("shield"));
        std::fs::write(patched.join("port_me/marker"), "").unwrap();
        let again = apply_patches(&cache, &original, &entry.id(), &entry.patches).unwrap();
        assert_eq!(again, patched);
        assert!(again.join("port_me/marker").exists());
        // The size of the port.
        let text = std::fs::read_to_string(&entry.patches[0]).unwrap();
        assert_eq!(patch_size(&text), (2, 2));
        // Runs of a patched project are other runs than the unpatched one's, and another patch
        // content is another run again.
        let mut unpatched = entry.clone();
        unpatched.patches.clear();
        let source = Source::Pypi;
        assert_ne!(
            entry_fingerprint(entry, &source),
            entry_fingerprint(&unpatched, &source)
        );
        let edited = cache.join("edited.patch");
        std::fs::write(&edited, text.replace("level cancellation", "cancellation")).unwrap();
        let mut other = entry.clone();
        other.patches[0] = edited;
        assert_ne!(
            entry_fingerprint(entry, &source),
            entry_fingerprint(&other, &source)
        );
        // A patch that does not apply is a clear error, and leaves nothing half-patched.
        let stale = vec![fixture.join("broken/99-stale.patch")];
        let err = apply_patches(&cache, &original, &entry.id(), &stale).unwrap_err();
        assert!(
            err.contains("99-stale.patch does not apply to port-me-1.0"),
            "{err}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(cache.join("src"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("partial"))
            .collect();
        assert!(leftovers.is_empty());
        let _ = std::fs::remove_dir_all(&cache);
        // A pattern that names no file is a manifest error.
        let bad = "[[project]]\nname = \"x\"\nversion = \"1\"\ninstall = \".\"\npatches = [\"patches/*.diff\"]\n";
        let err = crate::manifest::parse_corpus_at(bad, &fixture).unwrap_err();
        assert!(err.contains("names no file"), "{err}");
    }

    #[test]
    fn patches_apply_only_to_a_ported_run() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/compat_patch");
        let corpus = crate::manifest::load_corpus(&fixture.join("corpus.toml")).unwrap();
        let listed = &corpus.projects[0];
        assert_eq!(listed.patches.len(), 2);
        let cache = std::env::temp_dir().join(format!(
            "asyncbis-compat-patch-ported-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&cache);
        let original = fixture.join("project");
        let source = Source::Pypi;
        let mut published = listed.clone();
        published.patches.clear();

        // A plain run: the project as published, in its own tree and venv, under the keys of
        // an entry that never had patches; nothing is patched and no patch is reported.
        let plain = entry_for_run(listed, false);
        assert!(plain.patches.is_empty());
        let (tree, venv) = run_tree(&cache, original.clone(), &plain, "3.12.1").unwrap();
        assert_eq!(
            (tree, venv.as_str()),
            (original.clone(), "port-me-1.0-py3.12.1")
        );
        assert!(!cache.join("src").exists(), "a plain run patched a copy");
        assert_eq!(
            entry_fingerprint(&plain, &source),
            entry_fingerprint(&published, &source)
        );
        let python = Python {
            path: PathBuf::from("python3"),
            version: "3.12.1".into(),
        };
        assert!(ProjectResult::new(&plain, &python).patches.is_empty());

        // A --ported run: the patched copy, its own venv and keys, the patches reported.
        let ported = entry_for_run(listed, true);
        assert_eq!(ported.patches, listed.patches);
        let (tree, venv) = run_tree(&cache, original.clone(), &ported, "3.12.1").unwrap();
        assert!(tree.starts_with(cache.join("src")), "{}", tree.display());
        let code = std::fs::read_to_string(tree.join("port_me/__init__.py")).unwrap();
        assert!(code.contains("await asyncio.shield(close(resource))"));
        assert!(venv.starts_with("port-me-1.0-patched-"), "{venv}");
        assert_ne!(
            entry_fingerprint(&ported, &source),
            entry_fingerprint(&published, &source)
        );
        let reported = ProjectResult::new(&ported, &python).patches;
        assert_eq!(reported.len(), 2);
        assert_eq!(reported[0].file, "01-shield-cleanup.patch");
        let _ = std::fs::remove_dir_all(&cache);
    }

    #[test]
    fn patches_of_a_manifest_named_by_a_relative_path_apply() {
        // `run --corpus corpus/default.toml` names the manifest relative to the working
        // directory, while `patch` runs inside the copy of the sdist: the patch files must
        // still be found from there.
        let relative = Path::new("../../tests/fixtures/compat_patch/corpus.toml");
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(relative)
                .is_file(),
            "cargo runs unit tests in the crate's directory"
        );
        let corpus = crate::manifest::load_corpus(relative).unwrap();
        let entry = &corpus.projects[0];
        let cache = std::env::temp_dir().join(format!(
            "asyncbis-compat-patch-relative-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&cache);
        let original = relative.parent().unwrap().join("project");
        let patched = apply_patches(&cache, &original, &entry.id(), &entry.patches);
        let code = std::fs::read_to_string(patched.unwrap().join("port_me/__init__.py"));
        let _ = std::fs::remove_dir_all(&cache);
        assert!(code
            .unwrap()
            .contains("await asyncio.shield(close(resource))"));
    }

    #[test]
    fn session_errors_are_found_at_the_end_of_the_output() {
        let output = "collected 0 items\nINTERNALERROR> Traceback (most recent call last):\nINTERNALERROR>   File \"x.py\", line 1\nINTERNALERROR> pytest.PytestAssertRewriteWarning: Module already imported so cannot be rewritten; asyncbis\n";
        assert_eq!(
            session_error(output).as_deref(),
            Some("pytest.PytestAssertRewriteWarning: Module already imported so cannot be rewritten; asyncbis")
        );
        assert_eq!(
            session_error("ERROR: usage: pytest [options]\n").as_deref(),
            Some("usage: pytest [options]")
        );
        assert_eq!(session_error("5 passed in 0.1s\n"), None);
        let bare = "  File \"x.py\", line 3, in f\n    warnings.warn(w)\npytest.PytestAssertRewriteWarning: Module already imported; asyncbis\n";
        assert_eq!(
            session_error(bare).as_deref(),
            Some("pytest.PytestAssertRewriteWarning: Module already imported; asyncbis")
        );
    }

    #[test]
    fn activation_sums_stats_files_and_ignores_junk() {
        let dir =
            std::env::temp_dir().join(format!("asyncbis-compat-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!read_activation(&dir).is_activated());
        std::fs::write(dir.join("1.json"), r#"{"pid": 1, "tasks": 0, "loops": 0, "disabled": [], "python": "3.12.1", "asyncbis": "0.1.0"}"#).unwrap();
        let idle = read_activation(&dir);
        assert_eq!(idle.processes, 1);
        assert!(!idle.is_activated());
        std::fs::write(dir.join("2.json"), r#"{"pid": 2, "tasks": 7, "loops": 1, "disabled": ["inline-shield"], "python": "3.12.1", "asyncbis": "0.1.0"}"#).unwrap();
        std::fs::write(dir.join("3.json"), "{truncated").unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let active = read_activation(&dir);
        assert_eq!((active.processes, active.tasks, active.loops), (2, 7, 1));
        assert_eq!(active.disabled, vec!["inline-shield"]);
        assert_eq!(active.asyncbis_version.as_deref(), Some("0.1.0"));
        assert!(active.is_activated());
        let _ = std::fs::remove_dir_all(dir);
    }
}

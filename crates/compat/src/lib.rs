//! The breakage study (`asyncbis-compat`): runs third-party asyncio test suites on stock asyncio
//! and under asyncbis, attributes each new failure to a behaviour switch, and writes a report.

pub mod analysis;
pub mod cache;
pub mod cli;
pub mod compare;
pub mod environment;
pub mod manifest;
pub mod merge;
pub mod process;
pub mod progress;
pub mod report;
pub mod results;
pub mod services;
pub mod signature;
pub mod study;
// build.rs's half (it generates analysis's switch constants), compiled here for its tests.
#[cfg(test)]
mod switch_list;

use cli::{Command, Options};
use environment::Python;
use manifest::{Corpus, ProjectEntry};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use study::{ProjectResult, Source, Status, Study};

const QUICK_CORPUS: &str = include_str!("../../../corpus/quick.toml");
const DEFAULT_CORPUS: &str = include_str!("../../../corpus/default.toml");

/// The tool's entry point: runs with `args` (without the program name), returns the exit status.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let options = match cli::parse_args(args) {
        Ok(options) => options,
        Err(err) => {
            // clap's own message (help and --version included) and status: 0 or 2.
            let _ = err.print();
            return err.exit_code();
        }
    };
    let outcome = match options.command.clone() {
        Command::List => list(&options),
        Command::Render(from) => render(&from, &options.out),
        Command::Merge(from) => merge_reports(&from, &options.out),
        Command::Compare(from) => compare_reports(&from, &options.out),
        Command::Services(names) => start_services(&names, &options),
        Command::Completions(shell) => {
            // Generated into memory first: clap_complete panics on a failed write, and a
            // closed pipe (`| head`) is not an error worth a panic.
            let mut script = Vec::new();
            cli::write_completions(shell, &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(0)
        }
        Command::Run => run_corpus(&options),
        Command::Check(path) => check(&path, &options),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("asyncbis-compat: error: {err}");
            2
        }
    }
}

fn load_named_corpus(spec: &str) -> Result<Corpus, String> {
    match spec {
        "quick" => {
            manifest::parse_corpus(QUICK_CORPUS).map_err(|e| format!("built-in quick corpus: {e}"))
        }
        "default" => manifest::parse_corpus(DEFAULT_CORPUS)
            .map_err(|e| format!("built-in default corpus: {e}")),
        path => manifest::load_corpus(Path::new(path)),
    }
}

/// The hash of a corpus manifest's text (report.json's `corpus_hash`), `None` if unreadable.
fn corpus_hash(spec: &str) -> Option<String> {
    let text = match spec {
        "quick" => QUICK_CORPUS.to_string(),
        "default" => DEFAULT_CORPUS.to_string(),
        path => std::fs::read_to_string(path).ok()?,
    };
    Some(cache::short_hash(&[&text]))
}

fn list(options: &Options) -> Result<i32, String> {
    let corpus = load_named_corpus(&options.corpus)?;
    for entry in &corpus.projects {
        let services = if entry.services.is_empty() {
            String::new()
        } else {
            format!(" [needs {}]", entry.services.join(", "))
        };
        let skip = entry
            .skip
            .as_ref()
            .map(|r| format!(" (skipped: {r})"))
            .unwrap_or_default();
        println!("{}=={}{services}{skip}", entry.name, entry.version);
    }
    eprintln!(
        "{}",
        report::plural(corpus.projects.len(), "project", "projects")
    );
    Ok(0)
}

fn start_services(names: &[String], options: &Options) -> Result<i32, String> {
    for name in names {
        if services::spec(name).is_none() {
            return Err(format!(
                "unknown service {name} (known: {})",
                manifest::KNOWN_SERVICES.join(", ")
            ));
        }
    }
    let env = services::Services::new(!options.no_services).ensure(names)?;
    for (key, value) in env {
        println!("export {key}={value}");
    }
    eprintln!(
        "asyncbis-compat: running on 127.0.0.1: {}",
        names.join(", ")
    );
    Ok(0)
}

fn render(from: &Path, out: &Path) -> Result<i32, String> {
    let report = read_report(from)?;
    report::write_report(&report, out)?;
    eprintln!(
        "asyncbis-compat: wrote {}/report.{{json,md,html}}",
        out.display()
    );
    Ok(0)
}

/// Reads a report.json (its summary recounted by the current rule).
fn read_report(from: &Path) -> Result<report::Report, String> {
    let text = std::fs::read_to_string(from)
        .map_err(|err| format!("cannot read {}: {err}", from.display()))?;
    report::Report::from_json(&text)
        .map_err(|err| format!("{} is not an asyncbis-compat report: {err}", from.display()))
}

fn read_inputs(from: &[PathBuf]) -> Result<Vec<merge::Input>, String> {
    from.iter()
        .map(|path| {
            Ok(merge::Input {
                path: path.display().to_string(),
                report: read_report(path)?,
            })
        })
        .collect()
}

fn compare_reports(from: &[PathBuf], out: &Path) -> Result<i32, String> {
    let comparison = compare::compare(&read_inputs(from)?)?;
    for warning in &comparison.warnings {
        eprintln!("asyncbis-compat: warning: {warning}");
    }
    compare::write_comparison(&comparison, out)?;
    eprintln!(
        "asyncbis-compat: wrote {}/compare.{{json,md,html}}",
        out.display()
    );
    Ok(0)
}

fn merge_reports(from: &[PathBuf], out: &Path) -> Result<i32, String> {
    let inputs = read_inputs(from)?;
    let merged = merge::merge(&inputs)?;
    for warning in &merged.warnings {
        eprintln!("asyncbis-compat: warning: {warning}");
    }
    report::write_report(&merged.report, out)?;
    print_closing(&merged.report, out);
    let partial = merged
        .report
        .merged
        .as_ref()
        .is_some_and(|m| !m.missing.is_empty());
    Ok(if partial { 1 } else { 0 })
}

/// Keeps the `index`-th of `count` slices (1-based), dealing entries round-robin so that slow
/// and fast projects spread evenly.
pub fn shard<T: Clone>(items: &[T], index: usize, count: usize) -> Vec<T> {
    items
        .iter()
        .enumerate()
        .filter(|(i, _)| i % count == index - 1)
        .map(|(_, item)| item.clone())
        .collect()
}

fn default_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("ASYNCBIS_COMPAT_CACHE") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".cache/asyncbis-compat"),
        None => PathBuf::from(".cache/asyncbis-compat"),
    }
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|err| format!("bad path {}: {err}", path.display()))
}

/// Resolves interpreters, uv, the cache and the asyncbis wheels shared by `run` and `check`.
/// asyncbis comes from --wheel, else --asyncbis-src (built), else the asyncbis each Python has
/// installed (packed into a wheel as it is).
fn make_study(
    options: &Options,
    projects: usize,
) -> Result<(Study, Vec<Python>, Vec<report::WheelInfo>), String> {
    let specs = if options.pythons.is_empty() {
        vec!["python3".to_string()]
    } else {
        options.pythons.clone()
    };
    let pythons = specs
        .iter()
        .map(|s| environment::resolve_python(s))
        .collect::<Result<Vec<_>, _>>()?;
    let host = pythons[0].clone();
    let cache_root = absolute(&options.cache.clone().unwrap_or_else(default_cache))?;
    std::fs::create_dir_all(&cache_root)
        .map_err(|err| format!("cannot create cache {}: {err}", cache_root.display()))?;
    let mut wheels = BTreeMap::new();
    let mut wheel_infos = Vec::new();
    if !options.stock_only {
        for python in &pythons {
            let wheel = if !options.wheels.is_empty() {
                for w in &options.wheels {
                    environment::check_wheel_path(w)?;
                }
                let wheels = options
                    .wheels
                    .iter()
                    .map(|w| absolute(w))
                    .collect::<Result<Vec<_>, _>>()?;
                environment::pick_wheel(&wheels, python)
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "no --wheel matches Python {} (cp{} or abi3)",
                            python.version,
                            python.minor().replace('.', "")
                        )
                    })?
            } else if let Some(source) = &options.asyncbis_src {
                eprintln!(
                    "asyncbis-compat: building the asyncbis wheel for Python {} (maturin)",
                    python.version
                );
                environment::build_wheel(&host, python, &absolute(source)?, &cache_root)?
            } else {
                environment::installed_wheel(python, &cache_root)?
            };
            if !wheel.is_file() {
                return Err(format!("wheel {} does not exist", wheel.display()));
            }
            let hash = cache::file_hash(&wheel)?;
            wheel_infos.push(report::WheelInfo {
                python: python.version.clone(),
                wheel: wheel
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                content_hash: hash.clone(),
            });
            wheels.insert(python.version.clone(), (wheel, hash));
        }
    }
    // After the wheels: a missing asyncbis is reported before any tool is fetched.
    let uv = environment::ensure_tool("uv", &host, &cache_root)?;
    let study = Study {
        // A local project's code changes under the same name: `check` never reuses results.
        cache: cache::Cache::new(
            cache_root,
            !options.fresh && !matches!(options.command, Command::Check(_)),
        ),
        host,
        uv,
        services: services::Services::new(!options.no_services),
        wheels,
        stock_only: options.stock_only,
        always_off: options.keep_off.clone(),
        profile: options.profile.clone(),
        switch_values: options.switch_values.clone(),
        progress: progress::Progress::new(projects * pythons.len(), options.quiet),
    };
    Ok((study, pythons, wheel_infos))
}

/// Runs every (project, Python) pair on `jobs` worker threads; results keep the input order.
fn run_all(
    study: &Study,
    work: &[(ProjectEntry, Source, Python)],
    jobs: usize,
) -> Vec<ProjectResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<ProjectResult>>> = Mutex::new(vec![None; work.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(work.len()).max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some((entry, source, python)) = work.get(index) else {
                    break;
                };
                let result = study.run_project(entry, source, python);
                results.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn run_corpus(options: &Options) -> Result<i32, String> {
    let started = std::time::Instant::now();
    let corpus = load_named_corpus(&options.corpus)?;
    let mut projects = corpus.projects.clone();
    if !options.only.is_empty() {
        for name in &options.only {
            if !projects.iter().any(|p| p.name.eq_ignore_ascii_case(name)) {
                return Err(format!(
                    "--only {name}: no such project in {}",
                    options.corpus
                ));
            }
        }
        projects.retain(|p| options.only.iter().any(|n| n.eq_ignore_ascii_case(&p.name)));
    }
    if let Some((index, count)) = options.shard {
        projects = shard(&projects, index, count);
    }
    // The corpus measures the projects as published; their ports only with --ported.
    if options.ported && projects.iter().all(|p| p.patches.is_empty()) {
        eprintln!(
            "asyncbis-compat: warning: --ported, but no project of this run lists patches: \
             every project runs as published"
        );
    }
    let projects: Vec<ProjectEntry> = projects
        .iter()
        .map(|p| study::entry_for_run(p, options.ported))
        .collect();
    let (study, pythons, wheel_infos) = make_study(options, projects.len())?;
    let work: Vec<(ProjectEntry, Source, Python)> = pythons
        .iter()
        .flat_map(|python| {
            projects
                .iter()
                .map(move |p| (p.clone(), Source::Pypi, python.clone()))
        })
        .collect();
    let results = run_all(&study, &work, options.jobs);
    let mut report = build_report(
        options,
        &options.corpus,
        corpus_hash(&options.corpus),
        &pythons,
        wheel_infos,
        results,
        started.elapsed().as_secs_f64(),
    );
    report.replace_paths(&machine_paths(&study, &pythons, None));
    report::write_report(&report, &options.out)?;
    print_closing(&report, &options.out);
    let not_activated = report
        .projects
        .iter()
        .any(|p| p.status == Status::NotActivated);
    Ok(if not_activated { 1 } else { 0 })
}

/// Absolute paths of this machine that reach a report (tracebacks, freeze entries, reasons),
/// each with the name it is written as, so a report carries no paths of the machine that made
/// it: the cache, each interpreter's standard library, the asyncbis wheels' directories, the
/// checked project, the home directory.
fn machine_paths(
    study: &Study,
    pythons: &[Python],
    project: Option<&Path>,
) -> Vec<(String, String)> {
    let mut paths = vec![(study.cache.root().to_path_buf(), "<cache>".to_string())];
    for python in pythons {
        if let Some(stdlib) = environment::stdlib_dir(python) {
            paths.push((stdlib, format!("<python{} stdlib>", python.minor())));
        }
    }
    for (wheel, _) in study.wheels.values() {
        if let Some(dir) = wheel.parent() {
            paths.push((dir.to_path_buf(), "<wheels>".to_string()));
        }
    }
    if let Some(project) = project {
        paths.push((project.to_path_buf(), "<project>".to_string()));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| h.len() > 1) {
        paths.push((PathBuf::from(home), "~".to_string()));
    }
    paths
        .into_iter()
        .map(|(path, name)| (path.to_string_lossy().into_owned(), name))
        .collect()
}

fn build_report(
    options: &Options,
    corpus: &str,
    corpus_hash: Option<String>,
    pythons: &[Python],
    wheels: Vec<report::WheelInfo>,
    projects: Vec<ProjectResult>,
    wall_seconds: f64,
) -> report::Report {
    report::Report {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        generated_unix: now_unix(),
        corpus: corpus.to_string(),
        pythons: pythons.iter().map(|p| p.version.clone()).collect(),
        wheels,
        stock_only: options.stock_only,
        always_off: options.keep_off.clone(),
        profile: options.profile.clone(),
        switch_values: options.switch_values.clone(),
        shard: options.shard.map(|(i, n)| format!("{i}/{n}")),
        ported: options.ported,
        corpus_hash,
        only: options.only.clone(),
        merged: None,
        wall_seconds,
        summary: report::summarize(&projects),
        projects,
    }
}

fn print_closing(report: &report::Report, out: &Path) {
    let s = &report.summary;
    eprintln!(
        "asyncbis-compat: {} ({} compared), {}, {:.1}% attributed, {:.0}s; report in {}/",
        report::plural(s.projects, "project", "projects"),
        s.compared,
        report::plural(s.newly_failing, "newly failing test", "newly failing tests"),
        s.attributed_share * 100.0,
        report.wall_seconds,
        out.display()
    );
    for project in report.projects.iter().filter(|p| p.status != Status::Ok) {
        eprintln!(
            "  {} {}: {:?} {}",
            project.name,
            project.python,
            project.status,
            project.reason.as_deref().unwrap_or("")
        );
    }
}

/// The distribution name from pyproject.toml (it finds the installed package), else the directory name.
fn local_project_name(root: &Path) -> String {
    let declared = std::fs::read_to_string(root.join("pyproject.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| {
            table
                .get("project")?
                .get("name")?
                .as_str()
                .map(String::from)
        });
    declared.unwrap_or_else(|| {
        root.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "project".into())
    })
}

fn check(path: &Path, options: &Options) -> Result<i32, String> {
    let started = std::time::Instant::now();
    let root = absolute(path)?;
    if !root.is_dir() {
        return Err(format!("{} is not a directory", root.display()));
    }
    let name = local_project_name(&root);
    let entry = ProjectEntry {
        name: name.clone(),
        version: "local".into(),
        install: manifest::shell_split(options.install.as_deref().unwrap_or(". pytest"))?,
        pytest_args: manifest::shell_split(options.pytest_args.as_deref().unwrap_or(""))?,
        tests: manifest::shell_split(options.tests.as_deref().unwrap_or(""))?,
        services: Vec::new(),
        timeout: options.timeout.unwrap_or(60),
        suite_timeout: options.suite_timeout.unwrap_or(1800),
        flaky: Vec::new(),
        env: BTreeMap::new(),
        skip: None,
        notes: String::new(),
        patches: Vec::new(),
    };
    let (study, pythons, wheel_infos) = make_study(options, 1)?;
    let work: Vec<(ProjectEntry, Source, Python)> = pythons
        .iter()
        .map(|python| (entry.clone(), Source::Local(root.clone()), python.clone()))
        .collect();
    let results = run_all(&study, &work, options.jobs);
    let mut report = build_report(
        options,
        &format!("check {}", path.display()),
        None,
        &pythons,
        wheel_infos,
        results,
        started.elapsed().as_secs_f64(),
    );
    report.replace_paths(&machine_paths(&study, &pythons, Some(&root)));
    report::write_report(&report, &options.out)?;
    print_closing(&report, &options.out);
    for project in &report.projects {
        for failure in &project.failures {
            let fixed = failure
                .attribution
                .as_ref()
                .map(|a| {
                    if a.fixed_by.is_empty() {
                        a.verdict.as_str().to_string()
                    } else {
                        a.fixed_by.join(", ")
                    }
                })
                .unwrap_or_default();
            println!(
                "{}\t{}\t{}\t{}",
                failure.nodeid,
                failure.outcome.as_str(),
                fixed,
                failure.signature.exc_type
            );
        }
    }
    if report.projects.iter().any(|p| p.status != Status::Ok) {
        return Ok(2);
    }
    Ok(if report.summary.newly_failing > 0 {
        1
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_everything_once() {
        let items: Vec<u32> = (0..10).collect();
        let mut seen: Vec<u32> = (1..=3).flat_map(|i| shard(&items, i, 3)).collect();
        seen.sort();
        assert_eq!(seen, items);
        assert_eq!(shard(&items, 1, 3), vec![0, 3, 6, 9]);
    }

    #[test]
    fn built_in_corpora_parse() {
        let quick = load_named_corpus("quick").unwrap();
        let default = load_named_corpus("default").unwrap();
        assert!(
            default.projects.len() >= 30,
            "default corpus has {}",
            default.projects.len()
        );
        for entry in &quick.projects {
            let in_default = default
                .projects
                .iter()
                .find(|p| p.name == entry.name)
                .expect("quick ⊂ default");
            assert_eq!(in_default.version, entry.version);
        }
        assert!(load_named_corpus("/nonexistent/corpus.toml")
            .unwrap_err()
            .contains("cannot read"));
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(main_with_args(vec!["--bogus".into()]), 2);
        assert_eq!(main_with_args(vec!["--help".into()]), 0);
        assert_eq!(
            main_with_args(vec![
                "list".into(),
                "--corpus".into(),
                "/nonexistent".into()
            ]),
            2
        );
    }
}

//! The study's report: `report.json` (all data), `report.md` and a self-contained `report.html`.

use crate::analysis::{Verdict, SWITCHES, SWITCH_DEFINITIONS};
use crate::results::Outcome;
use crate::signature::{Owner, Signature};
use crate::study::{ProjectResult, Status};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WheelInfo {
    pub python: String,
    pub wheel: String,
    pub content_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool_version: String,
    pub generated_unix: u64,
    pub corpus: String,
    pub pythons: Vec<String>,
    pub wheels: Vec<WheelInfo>,
    pub stock_only: bool,
    /// Switches off in every asyncbis run of this study.
    #[serde(default)]
    pub always_off: Vec<String>,
    /// The asyncbis profile of the asyncbis runs (`--profile`); `None`: the seed's defaults.
    #[serde(default)]
    pub profile: Option<String>,
    /// `--set` switch values on top of the profile (`name=value`).
    #[serde(default)]
    pub switch_values: Vec<String>,
    pub shard: Option<String>,
    /// `--ported`: the corpus entries' patches (ports) were applied; otherwise every project
    /// ran as published.
    #[serde(default)]
    pub ported: bool,
    /// Hash of the corpus manifest's text (`None` in reports written before it was recorded):
    /// shards of one corpus split the same project list only if the manifest did not change.
    #[serde(default)]
    pub corpus_hash: Option<String>,
    /// `--only` projects (empty: the whole corpus); the shards split this selection.
    #[serde(default)]
    pub only: Vec<String>,
    /// Set on a report made by `merge` from shard reports: the shards it holds and the missing.
    #[serde(default)]
    pub merged: Option<Merged>,
    pub wall_seconds: f64,
    pub projects: Vec<ProjectResult>,
    pub summary: Summary,
}

/// Which shards a merged report holds (`asyncbis-compat merge`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    /// The shards merged, "I/N", in order.
    pub shards: Vec<String>,
    /// The shards of the same run not given to the merge: empty when the report is complete.
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SwitchSummary {
    pub switch: String,
    /// Tests that pass with this switch off (a test can count for several switches).
    pub tests: usize,
    /// Tests that only this switch fixes.
    pub sole: usize,
    pub projects: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignatureSummary {
    pub signature: Signature,
    pub tests: usize,
    pub projects: Vec<String>,
    /// Switch (or verdict) → tests.
    pub fixed_by: BTreeMap<String, usize>,
    pub sample_test: String,
    pub sample_traceback: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub projects: usize,
    pub compared: usize,
    pub by_status: BTreeMap<String, usize>,
    pub stock_passing_tests: usize,
    pub flaky_tests: usize,
    pub newly_failing: usize,
    /// Of the newly failing: never started, not even alone, because the pytest session failed
    /// at start-up under asyncbis (a conftest raising on import, an INTERNALERROR).
    #[serde(default)]
    pub not_started: usize,
    /// Passed on stock, never ran under asyncbis because an earlier test ended their session,
    /// and did not fail alone: not failures.
    #[serde(default)]
    pub not_run: usize,
    pub newly_passing: usize,
    pub by_verdict: BTreeMap<String, usize>,
    /// Share of reproducible new failures explained by a named switch or a real combination
    /// (two switches or more).
    pub attributed_share: f64,
    /// New failures by who raised them (library, tests, harness, ...).
    pub by_owner: BTreeMap<String, usize>,
    /// Failures raised by the test harness only, per project.
    pub harness_only: BTreeMap<String, usize>,
    pub per_switch: Vec<SwitchSummary>,
    pub signatures: Vec<SignatureSummary>,
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Skipped => "skipped",
        Status::SetupFailed => "setup-failed",
        Status::StockBroken => "stock-broken",
        Status::NotActivated => "not-activated",
    }
}

fn project_label(p: &ProjectResult) -> String {
    format!("{}-{} (py{})", p.name, p.version, p.python)
}

pub fn summarize(projects: &[ProjectResult]) -> Summary {
    let mut summary = Summary {
        projects: projects.len(),
        ..Default::default()
    };
    let mut per_switch: BTreeMap<&str, (usize, usize, BTreeSet<String>)> = BTreeMap::new();
    let mut signatures: BTreeMap<String, SignatureSummary> = BTreeMap::new();
    let mut attributed = 0;
    for project in projects {
        *summary
            .by_status
            .entry(status_name(project.status).into())
            .or_default() += 1;
        if project.status != Status::Ok {
            continue;
        }
        summary.compared += 1;
        if let Some(stock) = project.runs.first() {
            summary.stock_passing_tests += stock.counts.passed;
        }
        summary.flaky_tests += project.flaky.len();
        summary.newly_passing += project.newly_passing.len();
        summary.newly_failing += project.failures.len();
        summary.not_run += project.not_run.len();
        summary.not_started += project
            .failures
            .iter()
            .filter(|f| f.outcome == Outcome::NotStarted)
            .count();
        for failure in &project.failures {
            if failure
                .attribution
                .as_ref()
                .is_some_and(|a| a.is_attributed())
            {
                attributed += 1;
            }
            let verdict = failure.attribution.as_ref().map(|a| a.counted_verdict());
            let verdict_name = verdict.map(Verdict::as_str).unwrap_or("not-attributed-yet");
            *summary.by_verdict.entry(verdict_name.into()).or_default() += 1;
            *summary
                .by_owner
                .entry(failure.signature.owner.as_str().into())
                .or_default() += 1;
            if failure.signature.owner == Owner::Harness {
                *summary
                    .harness_only
                    .entry(project.name.clone())
                    .or_default() += 1;
            }
            let fixed_by: Vec<String> = failure
                .attribution
                .as_ref()
                .map(|a| a.fixed_by.clone())
                .unwrap_or_default();
            for switch in &fixed_by {
                let entry = per_switch
                    .entry(
                        SWITCHES
                            .iter()
                            .find(|s| *s == switch)
                            .copied()
                            .unwrap_or("?"),
                    )
                    .or_default();
                entry.0 += 1;
                if fixed_by.len() == 1 {
                    entry.1 += 1;
                }
                entry.2.insert(project.name.clone());
            }
            let sig = signatures
                .entry(failure.signature.id.clone())
                .or_insert_with(|| SignatureSummary {
                    signature: failure.signature.clone(),
                    tests: 0,
                    projects: Vec::new(),
                    fixed_by: BTreeMap::new(),
                    sample_test: format!("{}: {}", project.name, failure.nodeid),
                    sample_traceback: failure.traceback.clone(),
                });
            sig.tests += 1;
            if !sig.projects.contains(&project.name) {
                sig.projects.push(project.name.clone());
            }
            let involved = failure
                .attribution
                .as_ref()
                .map(|a| a.involved.clone())
                .unwrap_or_default();
            let key = if involved.len() >= 2 {
                format!("combination({})", involved.join("+"))
            } else if fixed_by.is_empty() {
                failure_category(failure.attribution.as_ref())
            } else {
                held_off_label(&fixed_by.join("+"), failure)
            };
            let key = intermittent_label(key, failure);
            *sig.fixed_by.entry(key).or_default() += 1;
        }
    }
    let reproducible = summary.newly_failing
        - summary
            .by_verdict
            .get("not-reproducible")
            .copied()
            .unwrap_or(0);
    summary.attributed_share = if reproducible == 0 {
        1.0
    } else {
        attributed as f64 / reproducible as f64
    };
    summary.per_switch = SWITCHES
        .iter()
        .map(|switch| {
            let (tests, sole, projects) = per_switch.remove(switch).unwrap_or_default();
            SwitchSummary {
                switch: switch.to_string(),
                tests,
                sole,
                projects: projects.into_iter().collect(),
            }
        })
        .collect();
    let mut signatures: Vec<SignatureSummary> = signatures.into_values().collect();
    signatures.sort_by(|a, b| {
        b.tests
            .cmp(&a.tests)
            .then(a.signature.id.cmp(&b.signature.id))
    });
    summary.signatures = signatures;
    summary
}

impl Report {
    /// Reads a report.json and recounts its summary from the per-test verdicts with the current
    /// rule: a report written by an older tool (whose summary counted a one-switch
    /// "combination" as attributed) then agrees with its own per-project and signature columns.
    pub fn from_json(text: &str) -> Result<Report, serde_json::Error> {
        let mut report: Report = serde_json::from_str(text)?;
        report.summary = summarize(&report.projects);
        Ok(report)
    }

    /// Rewrites every string of the report with `paths` (absolute path, name) replaced by their
    /// names, longest path first. A path is replaced only where it ends (at a separator,
    /// quote or the end), so `/a/b` never rewrites `/a/bc`.
    pub fn replace_paths(&mut self, paths: &[(String, String)]) {
        let mut paths: Vec<&(String, String)> =
            paths.iter().filter(|(path, _)| path.len() > 1).collect();
        paths.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let Ok(mut value) = serde_json::to_value(&*self) else {
            return;
        };
        replace_in_strings(&mut value, &paths);
        if let Ok(report) = serde_json::from_value(value) {
            *self = report;
        }
        // A venv reused across runs (same wheel content, see environment::ensure_wheel) still
        // names the directory the wheel was first installed from, which is none of `paths`.
        for project in &mut self.projects {
            for source in project.installed.values_mut() {
                if let Some(name) = foreign_wheel_name(source) {
                    *source = format!("file://<wheels>/{name}");
                }
            }
        }
    }
}

/// The file name of a `file://` wheel whose directory is an absolute path of this machine.
fn foreign_wheel_name(source: &str) -> Option<String> {
    let path = source.strip_prefix("file:///")?;
    let (_, name) = path.rsplit_once('/')?;
    name.ends_with(".whl").then(|| name.to_string())
}

fn replace_in_strings(value: &mut serde_json::Value, paths: &[&(String, String)]) {
    match value {
        serde_json::Value::String(text) => {
            for (path, name) in paths {
                if text.contains(path.as_str()) {
                    *text = replace_path(text, path, name);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                replace_in_strings(item, paths);
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values_mut() {
                replace_in_strings(item, paths);
            }
        }
        _ => {}
    }
}

fn replace_path(text: &str, path: &str, name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(path) {
        let end = at + path.len();
        let next = rest[end..].chars().next();
        let whole = next.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'));
        out.push_str(&rest[..at]);
        out.push_str(if whole { name } else { path });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Writes report.json, report.md and report.html into `out`.
pub fn write_report(report: &Report, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out)
        .map_err(|err| format!("cannot create {}: {err}", out.display()))?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|err| format!("cannot write {}: {err}", path.display()))
    };
    let json = serde_json::to_string_pretty(report)
        .map_err(|err| format!("cannot encode report: {err}"))?;
    write("report.json", json)?;
    let switch_doc = switch_doc_link(out);
    write("report.md", render_markdown(report, switch_doc.as_deref()))?;
    write("report.html", render_html(report, switch_doc.as_deref()))
}

/// docs/switches.md relative to `out` when `out` lies inside an asyncbis checkout (a committed
/// report links its switch definitions); `None` elsewhere.
pub fn switch_doc_link(out: &Path) -> Option<String> {
    let out = std::path::absolute(out).ok()?;
    out.ancestors().enumerate().find_map(|(depth, dir)| {
        let is_checkout =
            dir.join("docs/switches.md").is_file() && dir.join("crates/compat").is_dir();
        is_checkout.then(|| "../".repeat(depth) + "docs/switches.md")
    })
}

/// Versions worth naming next to each project (the rest stays in report.json).
const KEY_PACKAGES: &[&str] = &["pytest", "pytest-asyncio", "anyio", "asyncbis"];

/// A readable version from a freeze entry: installs from a path or URL (the sdist tree, the
/// asyncbis wheel) are named by their version in the wheel file name, or `fallback`.
fn readable_version(value: &str, fallback: &str) -> String {
    if !value.contains("://") {
        return value.to_string();
    }
    let file = value.rsplit('/').next().unwrap_or(value);
    match file
        .strip_suffix(".whl")
        .and_then(|stem| stem.split('-').nth(1))
    {
        Some(version) => version.to_string(),
        None => fallback.to_string(),
    }
}

fn key_versions(project: &ProjectResult) -> String {
    let own = project.installed.get(&project.name.to_lowercase());
    let own = own
        .map(|v| readable_version(v, &project.version))
        .unwrap_or_else(|| project.version.clone());
    let mut parts = vec![format!("{} {own}", project.name)];
    for name in KEY_PACKAGES {
        if let Some(version) = project.installed.get(*name) {
            if *name != project.name {
                parts.push(format!("{name} {}", readable_version(version, "?")));
            }
        }
    }
    parts.join(", ")
}

/// A fixing switch found with harness-breaking switches held off says so: "x (y held off)".
fn held_off_label(switches: &str, failure: &crate::study::NewFailure) -> String {
    match failure.attribution.as_ref().map(|a| &a.held_off) {
        Some(held) if !held.is_empty() => format!("{switches} ({} held off)", held.join("+")),
        _ => switches.to_string(),
    }
}

/// Switches whose probe passed once but not when repeated are named after the verdict, so a
/// reader sees the lucky passes that were left out: "x (intermittent: y+z)".
fn intermittent_label(label: String, failure: &crate::study::NewFailure) -> String {
    match failure.attribution.as_ref().map(|a| &a.intermittent) {
        Some(lucky) if !lucky.is_empty() => format!("{label} (intermittent: {})", lucky.join("+")),
        _ => label,
    }
}

/// Tests that did not run, by reason.
fn not_run_reasons(report: &Report) -> BTreeMap<String, usize> {
    let mut reasons = BTreeMap::new();
    for project in &report.projects {
        for test in &project.not_run {
            let alone = match test.alone {
                Some(outcome) => format!("{} when run alone", outcome.as_str()),
                None => "its rerun alone could not be made".to_string(),
            };
            let key = format!(
                "{}: {} ({alone})",
                project.name,
                one_line(&test.reason, 160)
            );
            *reasons.entry(key).or_default() += 1;
        }
    }
    reasons
}

fn switch_counts(project: &ProjectResult) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for failure in &project.failures {
        match &failure.attribution {
            Some(a) if !a.fixed_by.is_empty() => {
                for s in &a.fixed_by {
                    *counts.entry(s.clone()).or_default() += 1;
                }
            }
            Some(a) if a.involved.len() >= 2 => {
                *counts
                    .entry(format!("combination({})", a.involved.join("+")))
                    .or_default() += 1
            }
            attribution => {
                *counts
                    .entry(failure_category(attribution.as_ref()))
                    .or_default() += 1
            }
        }
    }
    counts
}

fn format_counts(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The header line of a `--ported` run's report.
const PORTED_TEXT: &str = "the corpus's patches applied (corpus/patches/, --ported): \
                           projects that list patches ran as ported, not as published";

pub fn render_markdown(report: &Report, switch_doc: Option<&str>) -> String {
    let s = &report.summary;
    let mut md = String::new();
    let _ = writeln!(md, "# asyncbis breakage study\n");
    let _ = writeln!(
        md,
        "Corpus `{}`, Python {}, asyncbis-compat {}{}; {}, {}.\n",
        report.corpus,
        report.pythons.join(", "),
        report.tool_version,
        shard_text(report),
        plural(s.projects, "project", "projects"),
        wall_text(report)
    );
    if let Some(missing) = missing_text(report) {
        let _ = writeln!(md, "**Partial report**: {missing}\n");
    }
    if report.stock_only {
        let _ = writeln!(
            md,
            "**Stock-only run**: baselines without asyncbis (no comparison).\n"
        );
    }
    if report.ported {
        let _ = writeln!(md, "**Ported**: {PORTED_TEXT}.\n");
    }
    if report.profile.is_some() || !report.switch_values.is_empty() {
        let _ = writeln!(
            md,
            "asyncbis profile: **{}**{} (switch values: docs/switches.md, Profiles); each switch \
             is probed by turning it off on top of these values, and switches they turn off \
             are not probed.\n",
            report.profile.as_deref().unwrap_or("seed"),
            if report.switch_values.is_empty() {
                String::new()
            } else {
                format!(", with {}", report.switch_values.join(", "))
            }
        );
    }
    if !report.always_off.is_empty() {
        let _ = writeln!(
            md,
            "Switches kept off in every asyncbis run: {} (not attributed; their breakage is not counted).\n",
            report.always_off.join(", ")
        );
    }
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(md, "| measure | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| projects compared | {} of {} ({}) |",
        s.compared,
        s.projects,
        format_counts(&s.by_status)
    );
    let _ = writeln!(
        md,
        "| tests passing on stock asyncio (first run) | {} |",
        s.stock_passing_tests
    );
    let _ = writeln!(md, "| flaky on stock (ignored) | {} |", s.flaky_tests);
    let _ = writeln!(md, "| newly failing under asyncbis | {} |", s.newly_failing);
    let _ = writeln!(
        md,
        "| of which never started (session start-up failed, even alone) | {} |",
        s.not_started
    );
    let _ = writeln!(
        md,
        "| not run under asyncbis (an earlier test ended the session; not failures) | {} |",
        s.not_run
    );
    let _ = writeln!(md, "| newly passing under asyncbis | {} |", s.newly_passing);
    let _ = writeln!(md, "| verdicts | {} |", format_counts(&s.by_verdict));
    let _ = writeln!(
        md,
        "| attributed (a named switch or a combination of two or more) | {:.1}% of reproducible failures |",
        s.attributed_share * 100.0
    );
    let _ = writeln!(md, "| raised by | {} |", format_counts(&s.by_owner));
    let _ = writeln!(md);
    let _ = writeln!(md, "## Per switch\n");
    let doc = match switch_doc {
        Some(link) => format!("[docs/switches.md]({link})"),
        None => "docs/switches.md of the asyncbis repository".to_string(),
    };
    let _ = writeln!(md, "Each behaviour asyncbis changes is a switch that can be turned off on its own (full definitions: {doc}). Tests that pass again with the switch turned off (a test may count for several switches).\n");
    let _ = writeln!(
        md,
        "| switch | what it changes (stock asyncio otherwise) | tests | only this switch | projects |\n|---|---|---:|---:|---|"
    );
    for (name, definition) in SWITCH_DEFINITIONS {
        let sw = s.per_switch.iter().find(|sw| sw.switch == *name);
        let _ = writeln!(
            md,
            "| `{name}` | {definition} | {} | {} | {} |",
            sw.map(|sw| sw.tests).unwrap_or(0),
            sw.map(|sw| sw.sole).unwrap_or(0),
            sw.map(|sw| sw.projects.join(", ")).unwrap_or_default()
        );
    }
    let _ = writeln!(md, "\nOther verdicts: `combination` (no single switch fixes the test, all off together does, and two or more switches break it each on its own), `unattributed` (fails with every switch off, or nothing above explains it), `not-reproducible` (passes when rerun alone).");
    let _ = writeln!(md, "\n## Per project\n");
    let _ = writeln!(md, "| project | python | status | stock (passed/failed/errors/skipped) | flaky | newly failing | by switch | harness-raised |\n|---|---|---|---|---:|---:|---|---:|");
    for p in &report.projects {
        let stock = p
            .runs
            .first()
            .map(|r| {
                format!(
                    "{}/{}/{}/{}",
                    r.counts.passed,
                    r.counts.failing(),
                    r.counts.errors,
                    r.counts.skipped
                )
            })
            .unwrap_or_else(|| "-".into());
        let harness = p
            .failures
            .iter()
            .filter(|f| f.signature.owner == Owner::Harness)
            .count();
        let status = match &p.reason {
            Some(reason) => format!("{}: {}", status_name(p.status), one_line(reason, 120)),
            None => status_name(p.status).to_string(),
        };
        let _ = writeln!(
            md,
            "| {}-{} | {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            p.version,
            p.python,
            status.replace('|', "\\|"),
            stock,
            p.flaky.len(),
            p.failures.len(),
            format_counts(&switch_counts(p)),
            harness
        );
    }
    let notes: Vec<&ProjectResult> = report
        .projects
        .iter()
        .filter(|p| p.note.is_some())
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for p in notes {
            let _ = writeln!(
                md,
                "- {} (py{}): {}",
                p.name,
                p.python,
                p.note.as_deref().unwrap_or("")
            );
        }
    }
    let not_run = not_run_reasons(report);
    if !not_run.is_empty() {
        let _ = writeln!(md, "\n## Not run under asyncbis\n");
        let _ = writeln!(md, "Tests that passed on stock and never started under asyncbis because an earlier test ended their session; rerun alone in a fresh session they did not fail, so they are not counted as newly failing. (A test that cannot start even alone is newly failing, `not-started`.)\n");
        for (reason, count) in &not_run {
            let _ = writeln!(md, "- {}: {count}", reason.replace('|', "\\|"));
        }
    }
    if !s.harness_only.is_empty() {
        let _ = writeln!(md, "\n## Harness-only breakage\n");
        let _ = writeln!(md, "Failures raised in the test harness (pytest, pytest-asyncio, AnyIO's plugin, unittest), not in library or test code.\n");
        for (project, count) in &s.harness_only {
            let _ = writeln!(md, "- {project}: {count}");
        }
    }
    let _ = writeln!(md, "\n## Failure signatures\n");
    let _ = writeln!(md, "| id | tests | exception | message | raised in | by | fixed by | projects |\n|---|---:|---|---|---|---|---|---|");
    for sig in s.signatures.iter().take(60) {
        let g = &sig.signature;
        let _ = writeln!(
            md,
            "| `{}` | {} | `{}` | {} | `{}` | {} | {} | {} |",
            &g.id[..8.min(g.id.len())],
            sig.tests,
            g.exc_type,
            one_line(&g.message, 90).replace('|', "\\|"),
            g.frame,
            g.owner.as_str(),
            format_counts(&sig.fixed_by),
            sig.projects.join(", ")
        );
    }
    let _ = writeln!(md, "\n## Versions used\n");
    for p in &report.projects {
        let _ = writeln!(
            md,
            "- {} on Python {}: {}",
            p.name,
            p.python,
            key_versions(p)
        );
    }
    for wheel in &report.wheels {
        let _ = writeln!(
            md,
            "- asyncbis wheel for {}: `{}` (content hash {})",
            wheel.python, wheel.wheel, wheel.content_hash
        );
    }
    md
}

/// Which part of the corpus the report covers: ", shard 1/3", ", merged from shards 1/3, 2/3".
fn shard_text(report: &Report) -> String {
    match (&report.merged, &report.shard) {
        (Some(merged), _) => format!(", merged from shards {}", merged.shards.join(", ")),
        (None, Some(shard)) => format!(", shard {shard}"),
        (None, None) => String::new(),
    }
}

fn wall_text(report: &Report) -> String {
    if report.merged.is_some() {
        format!(
            "{:.0} s wall summed over the shard runs (results already in the cache are reused, not rerun)",
            report.wall_seconds
        )
    } else {
        format!(
            "{:.0} s wall for this invocation (results already in the cache are reused, not rerun)",
            report.wall_seconds
        )
    }
}

/// For a merged report without all its shards: which are missing and what that means.
fn missing_text(report: &Report) -> Option<String> {
    let merged = report.merged.as_ref()?;
    if merged.missing.is_empty() {
        return None;
    }
    let (shards, verb, those) = if merged.missing.len() == 1 {
        ("shard", "is", "that shard")
    } else {
        ("shards", "are", "those shards")
    };
    Some(format!(
        "{shards} {} of this run {verb} missing; the projects of {those} are not in this report, \
         and its totals count only the shards it holds ({}).",
        merged.missing.join(", "),
        merged.shards.join(", ")
    ))
}

/// `1 project`, `2 projects`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn one_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() > max {
        line.chars().take(max).collect::<String>() + "…"
    } else {
        line.to_string()
    }
}

/// Eleven switch colours, then the verdicts: combination, unattributed, not reproducible, pending.
const PALETTE: &[&str] = &[
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#17becf", "#bcbd22", "#8c8c8c", "#222222", "#d0d0d0", "#f0e442",
];

/// The colour of a chart's `index`-th series: the palette, then hues a golden angle apart (a
/// chart by project can have more series than the palette has colours).
pub fn series_colour(index: usize) -> String {
    match PALETTE.get(index) {
        Some(colour) => colour.to_string(),
        None => format!(
            "hsl({:.0},55%,{}%)",
            (index as f64 * 137.508) % 360.0,
            if index.is_multiple_of(2) { 45 } else { 65 }
        ),
    }
}

/// The verdict categories drawn after the switches.
const VERDICT_CATEGORIES: &[&str] = &[
    "combination",
    "unattributed",
    "not-reproducible",
    "not-attributed-yet",
];

/// The category a failure is drawn in: its first fixing switch, else its verdict. A
/// "combination" needs two switches or more that each break the test; one (as older reports
/// have it) explains nothing, so it is drawn as unattributed, never as a grey combination.
pub fn failure_category(attribution: Option<&crate::analysis::Attribution>) -> String {
    match attribution {
        None => "not-attributed-yet".into(),
        Some(a) if !a.fixed_by.is_empty() => a.fixed_by[0].clone(),
        Some(a) => a.counted_verdict().as_str().into(),
    }
}

#[derive(Debug, Serialize)]
pub struct Bar {
    x: String,
    width: String,
    fill: String,
    name: String,
    value: usize,
}

#[derive(Debug, Serialize)]
pub struct ChartRow {
    label: String,
    y: String,
    text_y: String,
    bars: Vec<Bar>,
    total: usize,
    total_x: String,
}

#[derive(Debug, Serialize)]
pub struct LegendItem {
    name: String,
    fill: String,
    x: String,
    y: String,
    text_x: String,
    text_y: String,
}

/// A horizontal stacked bar chart's geometry, drawn by templates/chart.html.
#[derive(Debug, Serialize)]
pub struct Chart {
    title: String,
    width: String,
    height: String,
    label_right: String,
    bar_height: String,
    rows: Vec<ChartRow>,
    legend: Vec<LegendItem>,
}

impl Chart {
    /// `series` names the stacked parts (colours in PALETTE order); each row has one value per
    /// series.
    pub fn new(title: &str, series: &[String], rows: &[(String, Vec<usize>)]) -> Chart {
        // Wide enough for the longest row label (12px text, about 6.6px a character).
        let longest = rows
            .iter()
            .map(|(label, _)| label.chars().count())
            .max()
            .unwrap_or(0);
        let label_width = (longest as f64 * 6.6 + 12.0).max(260.0);
        let bar_width = 460.0;
        let row_height = 22.0;
        let top = 30.0;
        let legend_rows = series.len().div_ceil(3) as f64;
        let max = rows
            .iter()
            .map(|(_, v)| v.iter().sum::<usize>())
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let px = |v: f64| format!("{v:.1}");
        let chart_rows = rows
            .iter()
            .enumerate()
            .map(|(index, (label, values))| {
                let y = top + index as f64 * row_height;
                let mut x = label_width;
                let mut bars = Vec::new();
                for (part, value) in values.iter().enumerate() {
                    let w = *value as f64 / max * bar_width;
                    if w > 0.0 {
                        bars.push(Bar {
                            x: px(x),
                            width: px(w),
                            fill: series_colour(part),
                            name: series.get(part).cloned().unwrap_or_default(),
                            value: *value,
                        });
                    }
                    x += w;
                }
                ChartRow {
                    label: label.clone(),
                    y: px(y),
                    text_y: px(y + 14.0),
                    bars,
                    total: values.iter().sum(),
                    total_x: px(x + 4.0),
                }
            })
            .collect();
        let legend_top = top + rows.len() as f64 * row_height + 10.0;
        let legend = series
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let x = (index % 3) as f64 * 240.0;
                let y = legend_top + (index / 3) as f64 * 18.0;
                LegendItem {
                    name: name.clone(),
                    fill: series_colour(index),
                    x: px(x),
                    y: px(y),
                    text_x: px(x + 16.0),
                    text_y: px(y + 11.0),
                }
            })
            .collect();
        Chart {
            title: title.to_string(),
            width: px(label_width + bar_width + 60.0),
            height: px(top + rows.len() as f64 * row_height + 20.0 + legend_rows * 18.0),
            label_right: px(label_width - 6.0),
            bar_height: px(row_height - 6.0),
            rows: chart_rows,
            legend,
        }
    }
}

/// A piece of text; `switch` is set when it is a switch name (the template links it).
#[derive(Debug, Serialize, PartialEq)]
pub struct Part {
    text: String,
    switch: Option<&'static str>,
}

/// Splits `text` into switch names and the text between them, e.g. "combination(a+b)".
pub fn switch_parts(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // The earliest switch name in the rest, the longest at that position, on word bounds.
        let found = SWITCHES
            .iter()
            .filter_map(|name| {
                let mut from = 0;
                while let Some(i) = rest[from..].find(name) {
                    let at = from + i;
                    let end = at + name.len();
                    let word = |c: Option<char>| {
                        c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
                    };
                    if !word(rest[..at].chars().next_back()) && !word(rest[end..].chars().next()) {
                        return Some((at, *name));
                    }
                    from = at + 1;
                }
                None
            })
            .min_by_key(|(at, name)| (*at, std::cmp::Reverse(name.len())));
        match found {
            Some((at, name)) => {
                if at > 0 {
                    parts.push(Part {
                        text: rest[..at].to_string(),
                        switch: None,
                    });
                }
                parts.push(Part {
                    text: name.to_string(),
                    switch: Some(name),
                });
                rest = &rest[at + name.len()..];
            }
            None => {
                parts.push(Part {
                    text: rest.to_string(),
                    switch: None,
                });
                rest = "";
            }
        }
    }
    parts
}

#[derive(Debug, Serialize)]
struct CountItem {
    label: Vec<Part>,
    count: usize,
}

fn count_items(counts: &BTreeMap<String, usize>) -> Vec<CountItem> {
    counts
        .iter()
        .map(|(key, count)| CountItem {
            label: switch_parts(key),
            count: *count,
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct SummaryRow {
    name: &'static str,
    value: Vec<Part>,
}

#[derive(Debug, Serialize)]
struct SwitchRow {
    name: &'static str,
    definition: &'static str,
    colour: &'static str,
    tests: usize,
    sole: usize,
    projects: String,
}

#[derive(Debug, Serialize)]
struct ProjectRow {
    name: String,
    version: String,
    python: String,
    status: &'static str,
    reason: Option<String>,
    stock: String,
    asyncbis: String,
    flaky: usize,
    newly_failing: usize,
    by_switch: Vec<CountItem>,
    versions: String,
}

#[derive(Debug, Serialize)]
struct SignatureRow {
    id: String,
    tests: usize,
    exc_type: String,
    message: String,
    frame: String,
    owner: &'static str,
    fixed_by: Vec<CountItem>,
    projects: String,
    sample_test: String,
    traceback: String,
    shown_lines: usize,
    omitted_lines: usize,
}

/// Lines of a sample traceback shown in the HTML report: the end, where the exception is.
const TRACEBACK_LINES: usize = 60;

/// The last `max` lines of a traceback, and how many lines were left out above them.
pub fn traceback_tail(text: &str, max: usize) -> (String, usize) {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let omitted = lines.len().saturating_sub(max);
    (lines[omitted..].join("\n"), omitted)
}

#[derive(Debug, Serialize)]
struct HtmlContext<'a> {
    corpus: &'a str,
    pythons: String,
    tool_version: &'a str,
    shard: String,
    partial: Option<String>,
    projects_text: String,
    wall: String,
    stock_only: bool,
    /// The ported line, for a `--ported` run.
    ported: Option<&'static str>,
    always_off: &'a [String],
    profile: Option<&'a str>,
    switch_values: &'a [String],
    summary_rows: Vec<SummaryRow>,
    switch_doc: Option<&'a str>,
    switches: Vec<SwitchRow>,
    project_chart: Chart,
    switch_chart: Chart,
    owner_chart: Chart,
    projects: Vec<ProjectRow>,
    notes: Vec<&'a ProjectResult>,
    harness_only: Vec<BTreeMap<&'static str, String>>,
    /// Tests that did not run under asyncbis, by reason.
    not_run: Vec<BTreeMap<&'static str, String>>,
    signatures: Vec<SignatureRow>,
    wheels: &'a [WheelInfo],
}

fn run_counts(project: &ProjectResult, index: usize) -> String {
    project
        .runs
        .get(index)
        .map(|r| {
            format!(
                "{}/{}/{}/{}",
                r.counts.passed,
                r.counts.failing(),
                r.counts.errors,
                r.counts.skipped
            )
        })
        .unwrap_or_else(|| "-".into())
}

const TEMPLATE_REPORT: &str = include_str!("../templates/report.html");
const TEMPLATE_CHART: &str = include_str!("../templates/chart.html");

/// report.html, self-contained. `switch_doc` is a link to docs/switches.md (relative to the
/// report) when the report lies inside an asyncbis checkout.
pub fn render_html(report: &Report, switch_doc: Option<&str>) -> String {
    let s = &report.summary;
    let mut categories: Vec<String> = SWITCHES.iter().map(|s| s.to_string()).collect();
    categories.extend(VERDICT_CATEGORIES.iter().map(|c| c.to_string()));
    let project_rows: Vec<(String, Vec<usize>)> = report
        .projects
        .iter()
        .filter(|p| p.status == Status::Ok)
        .map(|p| {
            // Each failure counted once: under its first fixing switch, or its verdict.
            let mut values = vec![0; categories.len()];
            for failure in &p.failures {
                let key = failure_category(failure.attribution.as_ref());
                if let Some(i) = categories.iter().position(|c| *c == key) {
                    values[i] += 1;
                }
            }
            (project_label(p), values)
        })
        .collect();
    let switch_rows: Vec<(String, Vec<usize>)> = s
        .per_switch
        .iter()
        .map(|sw| (sw.switch.clone(), vec![sw.sole, sw.tests - sw.sole]))
        .collect();
    let owners: Vec<String> = s.by_owner.keys().cloned().collect();
    let owner_rows = vec![(
        "new failures".to_string(),
        s.by_owner.values().copied().collect::<Vec<_>>(),
    )];
    let text = |t: String| switch_parts(&t);
    let summary_rows = vec![
        SummaryRow {
            name: "projects compared",
            value: text(format!(
                "{} of {} ({})",
                s.compared,
                s.projects,
                format_counts(&s.by_status)
            )),
        },
        SummaryRow {
            name: "tests passing on stock asyncio (first run)",
            value: text(s.stock_passing_tests.to_string()),
        },
        SummaryRow {
            name: "flaky on stock (ignored)",
            value: text(s.flaky_tests.to_string()),
        },
        SummaryRow {
            name: "newly failing under asyncbis",
            value: text(s.newly_failing.to_string()),
        },
        SummaryRow {
            name: "of which never started (session start-up failed)",
            value: text(s.not_started.to_string()),
        },
        SummaryRow {
            name: "not run under asyncbis (not failures)",
            value: text(s.not_run.to_string()),
        },
        SummaryRow {
            name: "newly passing",
            value: text(s.newly_passing.to_string()),
        },
        SummaryRow {
            name: "verdicts",
            value: text(format_counts(&s.by_verdict)),
        },
        SummaryRow {
            name: "attributed",
            value: text(format!(
                "{:.1}% of reproducible failures",
                s.attributed_share * 100.0
            )),
        },
        SummaryRow {
            name: "raised by",
            value: text(format_counts(&s.by_owner)),
        },
    ];
    let switches = SWITCH_DEFINITIONS
        .iter()
        .enumerate()
        .map(|(index, (name, definition))| {
            let summary = s.per_switch.iter().find(|sw| sw.switch == *name);
            SwitchRow {
                name,
                definition,
                colour: PALETTE[index % PALETTE.len()],
                tests: summary.map(|sw| sw.tests).unwrap_or(0),
                sole: summary.map(|sw| sw.sole).unwrap_or(0),
                projects: summary.map(|sw| sw.projects.join(", ")).unwrap_or_default(),
            }
        })
        .collect();
    let projects = report
        .projects
        .iter()
        .map(|p| ProjectRow {
            name: p.name.clone(),
            version: p.version.clone(),
            python: p.python.clone(),
            status: status_name(p.status),
            reason: p.reason.as_deref().map(|r| one_line(r, 200)),
            stock: run_counts(p, 0),
            asyncbis: run_counts(p, 2),
            flaky: p.flaky.len(),
            newly_failing: p.failures.len(),
            by_switch: count_items(&switch_counts(p)),
            versions: key_versions(p),
        })
        .collect();
    let signatures = s
        .signatures
        .iter()
        .map(|sig| {
            let g = &sig.signature;
            let (traceback, omitted) = traceback_tail(&sig.sample_traceback, TRACEBACK_LINES);
            SignatureRow {
                id: g.id.clone(),
                tests: sig.tests,
                exc_type: g.exc_type.clone(),
                message: one_line(&g.message, 140),
                frame: g.frame.clone(),
                owner: g.owner.as_str(),
                fixed_by: count_items(&sig.fixed_by),
                projects: sig.projects.join(", "),
                sample_test: sig.sample_test.clone(),
                shown_lines: traceback.lines().count(),
                traceback,
                omitted_lines: omitted,
            }
        })
        .collect();
    let context = HtmlContext {
        corpus: &report.corpus,
        pythons: report.pythons.join(", "),
        tool_version: &report.tool_version,
        shard: shard_text(report),
        partial: missing_text(report),
        projects_text: plural(s.projects, "project", "projects"),
        wall: wall_text(report),
        stock_only: report.stock_only,
        ported: report.ported.then_some(PORTED_TEXT),
        always_off: &report.always_off,
        profile: report.profile.as_deref(),
        switch_values: &report.switch_values,
        summary_rows,
        switch_doc,
        switches,
        project_chart: Chart::new(
            "Newly failing tests per project, by the switch that fixes them",
            &categories,
            &project_rows,
        ),
        switch_chart: Chart::new(
            "Tests passing again with the switch off",
            &[
                "only this switch".to_string(),
                "also other switches".to_string(),
            ],
            &switch_rows,
        ),
        owner_chart: Chart::new("Who raised the new failures", &owners, &owner_rows),
        projects,
        notes: report
            .projects
            .iter()
            .filter(|p| p.note.is_some())
            .collect(),
        harness_only: s
            .harness_only
            .iter()
            .map(|(project, count)| {
                BTreeMap::from([("project", project.clone()), ("count", count.to_string())])
            })
            .collect(),
        not_run: not_run_reasons(report)
            .into_iter()
            .map(|(reason, count)| {
                BTreeMap::from([("reason", reason), ("count", count.to_string())])
            })
            .collect(),
        signatures,
        wheels: &report.wheels,
    };
    let mut env = minijinja::Environment::new();
    // The templates are compiled in and their context is fixed: an error is a bug of this tool.
    env.add_template("chart.html", TEMPLATE_CHART)
        .expect("templates/chart.html parses");
    env.add_template("report.html", TEMPLATE_REPORT)
        .expect("templates/report.html parses");
    let mut html = env
        .get_template("report.html")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
        .expect("templates/report.html renders");
    html.push('\n');
    html
}

/// Report data built from the model, for the tests of the commands that read reports
/// (`merge`, `compare`): fixtures that follow the model and cannot rot.
#[cfg(test)]
pub mod fixtures {
    use super::*;
    use crate::analysis::Attribution;
    use crate::results::Counts;
    use crate::study::{NewFailure, RunSummary};

    /// A newly failing test fixed by `fixed_by` (none: unattributed).
    pub fn failure(nodeid: &str, fixed_by: &[&str]) -> NewFailure {
        NewFailure {
            nodeid: nodeid.into(),
            outcome: Outcome::Failed,
            phase: "call".into(),
            signature: Signature {
                id: format!("sig-{}", fixed_by.join("+")),
                exc_type: "RuntimeError".into(),
                message: "boom".into(),
                frame: "pkg/a.py:f".into(),
                owner: Owner::Library,
            },
            attribution: Some(Attribution {
                verdict: if fixed_by.is_empty() {
                    Verdict::Unattributed
                } else {
                    Verdict::Switch
                },
                fixed_by: fixed_by.iter().map(|s| s.to_string()).collect(),
                involved: vec![],
                held_off: vec![],
                intermittent: vec![],
            }),
            reruns: BTreeMap::new(),
            traceback: format!("Traceback of {nodeid}"),
            signature_run: None,
        }
    }

    /// A compared project: 10 tests passing on stock, `failures` newly failing.
    pub fn project(name: &str, python: &str, failures: Vec<NewFailure>) -> ProjectResult {
        let run = |mode: &str, passed| RunSummary {
            mode: mode.into(),
            counts: Counts {
                passed,
                ..Default::default()
            },
            wall_seconds: 1.0,
            exit_status: Some(0),
            killed_at_cap: false,
            stalled: false,
            activation: None,
        };
        ProjectResult {
            name: name.into(),
            version: "1.0".into(),
            python: python.into(),
            status: Status::Ok,
            reason: None,
            note: None,
            installed: BTreeMap::new(),
            runs: vec![
                run("stock-1", 10),
                run("stock-2", 10),
                run("asyncbis", 10 - failures.len()),
            ],
            flaky: vec![],
            newly_passing: vec![],
            failures,
            not_run: vec![],
            patches: vec![],
            wall_seconds: 3.0,
        }
    }

    /// The report of a run of `corpus` (seed profile, one wheel per Python) over `projects`.
    pub fn report(corpus: &str, pythons: &[&str], projects: Vec<ProjectResult>) -> Report {
        Report {
            tool_version: "0.1.0".into(),
            generated_unix: 1_800_000_000,
            corpus: corpus.into(),
            pythons: pythons.iter().map(|p| p.to_string()).collect(),
            wheels: pythons
                .iter()
                .map(|p| WheelInfo {
                    python: p.to_string(),
                    wheel: "asyncbis-0.1.0-cp312-cp312-linux_x86_64.whl".into(),
                    content_hash: "00000000000000aa".into(),
                })
                .collect(),
            stock_only: false,
            always_off: vec![],
            profile: None,
            switch_values: vec![],
            shard: None,
            ported: false,
            corpus_hash: Some("c0ffee".into()),
            only: vec![],
            merged: None,
            wall_seconds: 10.0,
            summary: summarize(&projects),
            projects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Attribution;
    use crate::results::{Counts, Outcome};
    use crate::study::{NewFailure, NotRunTest, RunSummary};

    fn failure(id: &str, owner: Owner, fixed_by: &[&str], verdict: Verdict) -> NewFailure {
        NewFailure {
            nodeid: id.into(),
            outcome: Outcome::Failed,
            phase: "call".into(),
            signature: Signature {
                id: format!("sig-{}", owner.as_str()),
                exc_type: "RuntimeError".into(),
                message: "no <loop> & stuff".into(),
                frame: "pkg/a.py:f".into(),
                owner,
            },
            attribution: Some(Attribution {
                verdict,
                fixed_by: fixed_by.iter().map(|s| s.to_string()).collect(),
                involved: vec![],
                held_off: vec![],
                intermittent: vec![],
            }),
            reruns: BTreeMap::new(),
            traceback: "Traceback <here>".into(),
            signature_run: None,
        }
    }

    fn combination(id: &str, involved: &[&str]) -> NewFailure {
        let mut failure = failure(id, Owner::Harness, &[], Verdict::Combination);
        if let Some(a) = failure.attribution.as_mut() {
            a.involved = involved.iter().map(|s| s.to_string()).collect();
        }
        failure
    }

    fn held_off(mut failure: NewFailure) -> NewFailure {
        if let Some(a) = failure.attribution.as_mut() {
            a.held_off = vec!["no-loop-policies".into()];
        }
        failure.signature.id = "sig-own".into();
        failure
    }

    fn sample_report() -> Report {
        let mut ok = ProjectResult {
            name: "aiofoo".into(),
            version: "1.0".into(),
            python: "3.12.1".into(),
            status: Status::Ok,
            reason: None,
            note: None,
            installed: [
                ("aiofoo".to_string(), "1.0".to_string()),
                ("pytest".to_string(), "9.0".to_string()),
            ]
            .into(),
            runs: vec![RunSummary {
                mode: "stock-1".into(),
                counts: Counts {
                    passed: 10,
                    ..Default::default()
                },
                wall_seconds: 1.0,
                exit_status: Some(1),
                killed_at_cap: false,
                stalled: false,
                activation: None,
            }],
            flaky: vec!["t::flaky".into()],
            newly_passing: vec![],
            failures: vec![
                failure(
                    "t::a",
                    Owner::Library,
                    &["root-task-group"],
                    Verdict::Switch,
                ),
                failure(
                    "t::b",
                    Owner::Library,
                    &["level-cancellation", "task-cancel-level"],
                    Verdict::Switch,
                ),
                combination("t::c", &["root-task-group", "no-loop-policies"]),
                failure("t::d", Owner::Tests, &[], Verdict::Unattributed),
                failure("t::e", Owner::Tests, &[], Verdict::NotReproducible),
                // As older tools wrote it: a "combination" of one switch is no attribution.
                combination("t::f", &["no-loop-policies"]),
                held_off(failure(
                    "t::g",
                    Owner::Library,
                    &["task-cancel-level"],
                    Verdict::Switch,
                )),
            ],
            not_run: vec![
                NotRunTest {
                    nodeid: "t::h".into(),
                    reason: "the stall watchdog killed the session".into(),
                    alone: Some(Outcome::Passed),
                },
                NotRunTest {
                    nodeid: "t::i".into(),
                    reason: "the stall watchdog killed the session".into(),
                    alone: Some(Outcome::Skipped),
                },
            ],
            patches: vec![],
            wall_seconds: 3.0,
        };
        ok.installed.insert("asyncbis".into(), "0.1.0".into());
        let skipped = ProjectResult {
            name: "aiodb".into(),
            version: "2".into(),
            python: "3.12.1".into(),
            status: Status::Skipped,
            reason: Some("needs postgres | no apt".into()),
            note: None,
            installed: BTreeMap::new(),
            runs: vec![],
            flaky: vec![],
            newly_passing: vec![],
            failures: vec![],
            not_run: vec![],
            patches: vec![],
            wall_seconds: 0.0,
        };
        let projects = vec![ok, skipped];
        Report {
            tool_version: "0.1.0".into(),
            generated_unix: 0,
            corpus: "quick.toml".into(),
            pythons: vec!["3.12.1".into()],
            wheels: vec![],
            stock_only: false,
            always_off: vec![],
            profile: None,
            switch_values: vec![],
            shard: None,
            ported: false,
            corpus_hash: None,
            only: vec![],
            merged: None,
            wall_seconds: 5.0,
            summary: summarize(&projects),
            projects,
        }
    }

    #[test]
    fn lucky_passes_are_shown_beside_the_verdict_and_old_reports_still_read() {
        let mut report = sample_report();
        let mut lucky = failure(
            "t::lucky",
            Owner::Library,
            &["sniffio-name"],
            Verdict::Switch,
        );
        lucky.signature.id = "sig-lucky".into();
        if let Some(a) = lucky.attribution.as_mut() {
            a.intermittent = vec!["level-cancellation".into(), "structured-exit".into()];
        }
        report.projects[0].failures.push(lucky);
        report.summary = summarize(&report.projects);
        let label = "sniffio-name (intermittent: level-cancellation+structured-exit)";
        let sig = report
            .summary
            .signatures
            .iter()
            .find(|g| g.signature.id == "sig-lucky")
            .unwrap();
        assert_eq!(sig.fixed_by.keys().collect::<Vec<_>>(), [label]);
        // Counted for the switch that held up only.
        assert_eq!(report.summary.by_verdict["switch"], 4);
        assert!(render_markdown(&report, None).contains(label));
        // HTML links each switch to its section.
        let html = render_html(&report, None);
        assert!(
            html.contains("(intermittent: <a href=\"#switch-level-cancellation\">"),
            "{html}"
        );
        // A report written before repeat probes existed has no `intermittent`: none.
        let mut old = serde_json::to_value(&report.projects[0].failures[0]).unwrap();
        let attribution = old["attribution"].as_object_mut().unwrap();
        assert!(!attribution.contains_key("intermittent"), "empty: left out");
        attribution.remove("intermittent");
        let read: NewFailure = serde_json::from_value(old).unwrap();
        assert!(read.attribution.unwrap().intermittent.is_empty());
    }

    #[test]
    fn summary_counts_verdicts_switches_and_owners() {
        let s = sample_report().summary;
        assert_eq!((s.projects, s.compared), (2, 1));
        assert_eq!(s.by_status["skipped"], 1);
        assert_eq!(s.newly_failing, 7);
        assert_eq!(s.not_run, 2);
        assert_eq!(s.by_verdict["switch"], 3);
        // 4 of the 6 reproducible failures are explained: 3 by a named switch (one behind a
        // held-off harness switch), 1 by a combination of two; the one-switch "combination"
        // and the unattributed one are not.
        assert!(
            (s.attributed_share - 4.0 / 6.0).abs() < 1e-9,
            "{}",
            s.attributed_share
        );
        let own = s
            .signatures
            .iter()
            .find(|g| g.signature.id == "sig-own")
            .unwrap();
        assert_eq!(
            own.fixed_by["task-cancel-level (no-loop-policies held off)"],
            1
        );
        let root = s
            .per_switch
            .iter()
            .find(|p| p.switch == "root-task-group")
            .unwrap();
        assert_eq!((root.tests, root.sole), (1, 1));
        let level = s
            .per_switch
            .iter()
            .find(|p| p.switch == "level-cancellation")
            .unwrap();
        assert_eq!((level.tests, level.sole), (1, 0));
        assert_eq!(s.by_owner["library"], 3);
        assert_eq!(s.harness_only["aiofoo"], 2);
        assert_eq!(s.signatures[0].tests, 2);
        assert_eq!(s.per_switch.len(), SWITCHES.len());
    }

    #[test]
    fn renders_markdown_and_self_contained_html() {
        let report = sample_report();
        let md = render_markdown(&report, None);
        assert!(md.contains("a failure is only logged) | 1 | 1 | aiofoo |"));
        assert!(md.contains("needs postgres \\| no apt"));
        assert!(md.contains("66.7% of reproducible failures"));
        assert!(md.contains(
            "| not run under asyncbis (an earlier test ended the session; not failures) | 2 |"
        ));
        assert!(md.contains(
            "- aiofoo: the stall watchdog killed the session (passed when run alone): 1"
        ));
        assert!(md.contains(
            "- aiofoo: the stall watchdog killed the session (skipped when run alone): 1"
        ));
        let html = render_html(&report, None);
        assert!(html.contains("<h2>Not run under asyncbis</h2>"));
        assert!(html
            .contains("aiofoo: the stall watchdog killed the session (passed when run alone): 1"));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<svg"));
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        assert!(html.contains("Traceback &lt;here&gt;"));
        assert!(html.contains("no &lt;loop&gt; &amp; stuff"));
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.projects.len(), 2);
    }

    #[test]
    fn the_profile_and_switch_values_are_recorded() {
        let mut report = sample_report();
        assert!(!render_markdown(&report, None).contains("asyncbis profile"));
        report.profile = Some("recommended".into());
        report.switch_values = vec!["root-task-group=unretrieved-next-tick".into()];
        let md = render_markdown(&report, None);
        assert!(md.contains(
            "asyncbis profile: **recommended**, with root-task-group=unretrieved-next-tick"
        ));
        let html = render_html(&report, None);
        assert!(html.contains(
            "asyncbis profile: <b>recommended</b>, with root-task-group=unretrieved-next-tick"
        ));
        // reports written before profiles existed still load
        let mut json: serde_json::Value = serde_json::to_value(&report).unwrap();
        json.as_object_mut().unwrap().remove("profile");
        json.as_object_mut().unwrap().remove("switch_values");
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!((back.profile, back.switch_values.len()), (None, 0));
    }

    #[test]
    fn a_ported_run_is_recorded_and_shown() {
        let mut report = sample_report();
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ported"], false);
        assert!(!render_markdown(&report, None).contains("Ported"));
        assert!(!render_html(&report, None).contains("Ported"));
        report.ported = true;
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains("\"ported\":true"), "{text}");
        assert!(Report::from_json(&text).unwrap().ported);
        let md = render_markdown(&report, None);
        assert!(
            md.contains("**Ported**: the corpus's patches applied (corpus/patches/, --ported)"),
            "{md}"
        );
        let html = render_html(&report, None);
        assert!(
            html.contains(
                "<b>Ported</b>: the corpus&#x27;s patches applied (corpus&#x2f;patches&#x2f;, --ported)"
            ),
            "{html}"
        );
        // reports written before --ported existed load as unported runs
        let mut json: serde_json::Value = serde_json::to_value(&report).unwrap();
        json.as_object_mut().unwrap().remove("ported");
        let back = Report::from_json(&json.to_string()).unwrap();
        assert!(!back.ported);
    }

    #[test]
    fn versions_from_paths_are_readable() {
        assert_eq!(readable_version("3.14.5", "x"), "3.14.5");
        assert_eq!(
            readable_version("file:///t/asyncbis-0.1.0-cp312-cp312-linux_x86_64.whl", "x"),
            "0.1.0"
        );
        assert_eq!(
            readable_version("file:///cache/src/janus-2.0.0", "2.0.0"),
            "2.0.0"
        );
    }

    #[test]
    fn long_row_labels_widen_the_label_column() {
        let short = Chart::new(
            "t",
            &["a".into()],
            &[("aiofoo-1.0 (py3.12.1)".into(), vec![1])],
        );
        assert_eq!(short.label_right, "254.0");
        let label =
            "recommended + root-task-group=unretrieved-next-tick, keep-off no-loop-policies";
        let long = Chart::new("t", &["a".into()], &[(label.into(), vec![1])]);
        let right: f64 = long.label_right.parse().unwrap();
        assert!(right >= label.len() as f64 * 6.5, "{right}");
        let width: f64 = long.width.parse().unwrap();
        assert!(width >= right + 460.0, "{width}");
    }

    #[test]
    fn charts_with_more_series_than_colours_keep_them_apart() {
        assert_eq!(series_colour(0), "#4e79a7");
        let colours: BTreeSet<String> = (0..40).map(series_colour).collect();
        assert_eq!(colours.len(), 40);
        assert!(series_colour(PALETTE.len()).starts_with("hsl("));
    }

    #[test]
    fn empty_chart_does_not_divide_by_zero() {
        let chart = Chart::new("t", &["a".into()], &[("x".into(), vec![0])]);
        let json = serde_json::to_string(&chart).unwrap();
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
        assert!(chart.rows[0].bars.is_empty());
    }

    #[test]
    fn switches_are_defined_in_the_report_and_in_docs() {
        let docs = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/switches.md"),
        )
        .unwrap();
        for name in SWITCHES {
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "{name} not in docs"
            );
        }
        let report = sample_report();
        let html = render_html(&report, Some("../../docs/switches.md"));
        for (name, definition) in SWITCH_DEFINITIONS {
            assert!(
                html.contains(&format!("<tr id=\"switch-{name}\">")),
                "{name}"
            );
            let escaped = definition
                .replace('"', "&quot;")
                .replace('\'', "&#x27;")
                .replace('/', "&#x2f;");
            assert!(html.contains(&escaped), "definition of {name}");
        }
        // minijinja escapes '/' as &#x2f; (browsers read it as '/').
        assert!(
            html.contains("<a href=\"..&#x2f;..&#x2f;docs&#x2f;switches.md\">docs/switches.md</a>"),
            "{html}"
        );
        // Switch names elsewhere link to their definition.
        assert!(html.contains("<a href=\"#switch-root-task-group\">root-task-group</a> 1"));
        let md = render_markdown(&report, Some("../../docs/switches.md"));
        assert!(md.contains("[docs/switches.md](../../docs/switches.md)"));
        assert!(md.contains("| `sniffio-name` | sniffio.current_async_library()"));
        let unlinked = render_html(&report, None);
        assert!(unlinked.contains("docs/switches.md of the asyncbis repository"));
    }

    #[test]
    fn switch_names_are_found_in_labels() {
        let parts = switch_parts("combination(root-task-group+no-loop-policies)");
        let linked: Vec<_> = parts.iter().filter_map(|p| p.switch).collect();
        assert_eq!(linked, ["root-task-group", "no-loop-policies"]);
        let text: String = parts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(text, "combination(root-task-group+no-loop-policies)");
        // Not inside longer words.
        assert!(switch_parts("xroot-task-group")
            .iter()
            .all(|p| p.switch.is_none()));
        assert!(switch_parts("").is_empty());
    }

    #[test]
    fn one_switch_combination_is_not_drawn_as_a_combination() {
        let mut one = failure("t::x", Owner::Tests, &[], Verdict::Combination);
        one.attribution.as_mut().unwrap().involved = vec!["no-loop-policies".into()];
        let mut two = failure("t::y", Owner::Tests, &[], Verdict::Combination);
        two.attribution.as_mut().unwrap().involved =
            vec!["no-loop-policies".into(), "root-task-group".into()];
        assert_eq!(failure_category(one.attribution.as_ref()), "unattributed");
        assert_eq!(failure_category(two.attribution.as_ref()), "combination");
        let mut report = sample_report();
        report.projects[0].failures = vec![one, two];
        report.summary = summarize(&report.projects);
        let html = render_html(&report, None);
        assert!(html.contains("<title>unattributed: 1</title>"), "{html}");
        assert!(html.contains("<title>combination: 1</title>"));
        let keys: Vec<&String> = report.summary.signatures[0].fixed_by.keys().collect();
        assert_eq!(
            keys,
            [
                "combination(no-loop-policies+root-task-group)",
                "unattributed"
            ]
        );
        assert!(!html
            .contains("combination(<a href=\"#switch-no-loop-policies\">no-loop-policies</a>)"));
    }

    #[test]
    fn loading_an_old_report_recounts_its_summary_by_the_current_rule() {
        // An older tool's report.json: its summary counted the one-switch "combination" (t::f)
        // as a combination and as attributed (5 of 6 reproducible failures).
        let mut old = sample_report();
        old.summary.by_verdict = [
            ("combination".to_string(), 2),
            ("not-reproducible".to_string(), 1),
            ("switch".to_string(), 3),
            ("unattributed".to_string(), 1),
        ]
        .into();
        old.summary.attributed_share = 5.0 / 6.0;
        let text = serde_json::to_string_pretty(&old).unwrap();
        let report = Report::from_json(&text).unwrap();
        let s = &report.summary;
        assert_eq!(s.by_verdict["combination"], 1);
        assert_eq!(s.by_verdict["unattributed"], 2);
        assert_eq!(s.by_verdict.values().sum::<usize>(), s.newly_failing);
        assert!((s.attributed_share - 4.0 / 6.0).abs() < 1e-9);
        let verdicts = "combination 1, not-reproducible 1, switch 3, unattributed 2";
        let md = render_markdown(&report, None);
        assert!(md.contains(&format!("| verdicts | {verdicts} |")), "{md}");
        assert!(md.contains("| 66.7% of reproducible failures |"), "{md}");
        let html = render_html(&report, None);
        assert!(html.contains(verdicts), "{html}");
        assert!(html.contains("66.7%"));
        // The per-test records are kept as the old run wrote them.
        let f = &report.projects[0].failures[5];
        assert_eq!(f.nodeid, "t::f");
        assert_eq!(
            f.attribution.as_ref().unwrap().verdict,
            Verdict::Combination
        );
        assert!(Report::from_json("{\"projects\": 3}").is_err());
    }

    #[test]
    fn counts_are_pluralised() {
        let mut report = sample_report();
        report.projects.truncate(1);
        report.summary = summarize(&report.projects);
        let html = render_html(&report, None);
        assert!(html.contains("; 1 project, 5 s wall"), "{html}");
        assert!(render_markdown(&report, None).contains("; 1 project, 5 s wall"));
        assert!(render_html(&sample_report(), None).contains("; 2 projects, 5 s wall"));
        assert_eq!(plural(1, "process", "processes"), "1 process");
        assert_eq!(plural(0, "process", "processes"), "0 processes");
    }

    #[test]
    fn a_long_sample_traceback_shows_its_last_line() {
        let mut report = sample_report();
        let long: Vec<String> = (0..200).map(|i| format!("  frame {i}")).collect();
        let traceback = long.join("\n") + "\nValueError: the last line\n";
        for failure in &mut report.projects[0].failures {
            failure.traceback = traceback.clone();
        }
        report.summary = summarize(&report.projects);
        let html = render_html(&report, None);
        assert!(html.contains("ValueError: the last line</pre>"), "{html}");
        assert!(html.contains("its last 60 lines; 141 above them are in report.json"));
        assert!(!html.contains("frame 100\n"));
        // No scroll box: nothing caps the height of a traceback.
        assert!(!html.contains("max-height"));
        assert_eq!(traceback_tail("a\nb\nc", 5), ("a\nb\nc".to_string(), 0));
        assert_eq!(traceback_tail("a\nb\nc\n", 2), ("b\nc".to_string(), 1));
    }

    #[test]
    fn the_switch_doc_is_linked_inside_a_checkout_only() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        assert_eq!(
            switch_doc_link(&repo.join("report/quick-py3.12")).as_deref(),
            Some("../../docs/switches.md")
        );
        assert_eq!(
            switch_doc_link(&repo.join("asyncbis-compat-report")).as_deref(),
            Some("../docs/switches.md")
        );
        assert_eq!(switch_doc_link(Path::new("/")), None);
    }

    #[test]
    fn machine_paths_are_replaced_everywhere() {
        let mut report = sample_report();
        let failure = &mut report.projects[0].failures[0];
        failure.traceback = "File \"/home/u/.cache/ac/venvs/x/site.py\", line 1\n\
                             File \"/opt/py/lib/python3.12/asyncio/base_events.py\"\n\
                             /opt/py/lib/python3.12x/other.py"
            .into();
        report.projects[0].installed.insert(
            "asyncbis".into(),
            "file:///work/w/asyncbis-0.1.0-cp312-cp312-linux_x86_64.whl".into(),
        );
        report.projects[1].reason = Some("no /home/u/.cache/ac/src/x-1".into());
        report.replace_paths(&[
            ("/home/u/.cache/ac".into(), "<cache>".into()),
            (
                "/opt/py/lib/python3.12".into(),
                "<python3.12 stdlib>".into(),
            ),
            ("/work/w".into(), "<wheels>".into()),
            ("/home/u".into(), "~".into()),
        ]);
        let failure = &report.projects[0].failures[0];
        assert_eq!(
            failure.traceback,
            "File \"<cache>/venvs/x/site.py\", line 1\n\
             File \"<python3.12 stdlib>/asyncio/base_events.py\"\n\
             /opt/py/lib/python3.12x/other.py"
        );
        assert_eq!(
            report.projects[0].installed["asyncbis"],
            "file://<wheels>/asyncbis-0.1.0-cp312-cp312-linux_x86_64.whl"
        );
        assert_eq!(
            report.projects[1].reason.as_deref(),
            Some("no <cache>/src/x-1")
        );
        assert_eq!(
            readable_version(&report.projects[0].installed["asyncbis"], "?"),
            "0.1.0"
        );
    }

    #[test]
    fn a_wheel_installed_from_another_directory_is_named_without_it() {
        let mut report = sample_report();
        let installed = &mut report.projects[0].installed;
        installed.insert(
            "asyncbis".into(),
            "file:///srv/old/target/study-wheels/asyncbis-0.1.0-cp312-cp312-linux_x86_64.whl"
                .into(),
        );
        installed.insert(
            "anyio".into(),
            "file:///home/u/.cache/ac/src/anyio-4.16.0".into(),
        );
        installed.insert("sniffio".into(), "1.3.1".into());
        report.replace_paths(&[("/home/u/.cache/ac".into(), "<cache>".into())]);
        let installed = &report.projects[0].installed;
        assert_eq!(
            installed["asyncbis"],
            "file://<wheels>/asyncbis-0.1.0-cp312-cp312-linux_x86_64.whl"
        );
        assert_eq!(installed["anyio"], "file://<cache>/src/anyio-4.16.0");
        assert_eq!(installed["sniffio"], "1.3.1");
        assert_eq!(readable_version(&installed["asyncbis"], "?"), "0.1.0");
    }
}

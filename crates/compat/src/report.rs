//! The study's report: `report.json` (all data), `report.md` and a self-contained `report.html`.

use crate::analysis::{Verdict, SWITCHES};
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
    pub shard: Option<String>,
    pub wall_seconds: f64,
    pub projects: Vec<ProjectResult>,
    pub summary: Summary,
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
    pub newly_passing: usize,
    pub by_verdict: BTreeMap<String, usize>,
    /// Share of reproducible new failures explained by a switch or a combination.
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
        for failure in &project.failures {
            let verdict = failure.attribution.as_ref().map(|a| a.verdict);
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
            let key = if !involved.is_empty() {
                format!("combination({})", involved.join("+"))
            } else if fixed_by.is_empty() {
                verdict_name.to_string()
            } else {
                fixed_by.join("+")
            };
            *sig.fixed_by.entry(key).or_default() += 1;
        }
    }
    let reproducible = summary.newly_failing
        - summary
            .by_verdict
            .get("not-reproducible")
            .copied()
            .unwrap_or(0);
    let explained = summary.by_verdict.get("switch").copied().unwrap_or(0)
        + summary.by_verdict.get("combination").copied().unwrap_or(0);
    summary.attributed_share = if reproducible == 0 {
        1.0
    } else {
        explained as f64 / reproducible as f64
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
    write("report.md", render_markdown(report))?;
    write("report.html", render_html(report))
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

fn switch_counts(project: &ProjectResult) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for failure in &project.failures {
        match &failure.attribution {
            Some(a) if !a.fixed_by.is_empty() => {
                for s in &a.fixed_by {
                    *counts.entry(s.clone()).or_default() += 1;
                }
            }
            Some(a) if !a.involved.is_empty() => {
                *counts
                    .entry(format!("combination({})", a.involved.join("+")))
                    .or_default() += 1
            }
            Some(a) => *counts.entry(a.verdict.as_str().to_string()).or_default() += 1,
            None => *counts.entry("not-attributed-yet".to_string()).or_default() += 1,
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

pub fn render_markdown(report: &Report) -> String {
    let s = &report.summary;
    let mut md = String::new();
    let _ = writeln!(md, "# asyncbis breakage study\n");
    let _ = writeln!(
        md,
        "Corpus `{}`, Python {}, asyncbis-compat {}{}; {} projects, {:.0} s wall for this invocation (results already in the cache are reused, not rerun).\n",
        report.corpus,
        report.pythons.join(", "),
        report.tool_version,
        report
            .shard
            .as_ref()
            .map(|s| format!(", shard {s}"))
            .unwrap_or_default(),
        s.projects,
        report.wall_seconds
    );
    if report.stock_only {
        let _ = writeln!(
            md,
            "**Stock-only run**: baselines without asyncbis (no comparison).\n"
        );
    }
    if let Some(profile) = &report.profile {
        let _ = writeln!(
            md,
            "asyncbis profile: **{profile}** (its switch values: docs/switches.md, Profiles); \
             each switch is probed by turning it off on top of the profile, and switches the \
             profile turns off are not probed.\n"
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
    let _ = writeln!(md, "| newly passing under asyncbis | {} |", s.newly_passing);
    let _ = writeln!(md, "| verdicts | {} |", format_counts(&s.by_verdict));
    let _ = writeln!(
        md,
        "| attributed (switch or combination) | {:.1}% of reproducible failures |",
        s.attributed_share * 100.0
    );
    let _ = writeln!(md, "| raised by | {} |", format_counts(&s.by_owner));
    let _ = writeln!(md);
    let _ = writeln!(md, "## Per switch\n");
    let _ = writeln!(md, "Tests that pass again with the switch turned off (a test may count for several switches).\n");
    let _ = writeln!(
        md,
        "| switch | tests | only this switch | projects |\n|---|---:|---:|---|"
    );
    for sw in &s.per_switch {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            sw.switch,
            sw.tests,
            sw.sole,
            sw.projects.join(", ")
        );
    }
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
                    r.counts.failed + r.counts.timeouts + r.counts.hung,
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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Eleven switch colours, then the verdicts: combination, unattributed, not reproducible, pending.
const PALETTE: &[&str] = &[
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#17becf", "#bcbd22", "#8c8c8c", "#222222", "#d0d0d0", "#f0e442",
];

/// A horizontal stacked bar chart as inline SVG; `series` names the stacked parts.
pub fn bar_chart(title: &str, series: &[String], rows: &[(String, Vec<usize>)]) -> String {
    let label_width = 260.0;
    let bar_width = 460.0;
    let row_height = 22.0;
    let top = 30.0;
    let legend_rows = series.len().div_ceil(3) as f64;
    let height = top + rows.len() as f64 * row_height + 20.0 + legend_rows * 18.0;
    let max = rows
        .iter()
        .map(|(_, v)| v.iter().sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" role="img" aria-label="{t}"><text x="0" y="16" font-weight="bold">{t}</text>"#,
        w = label_width + bar_width + 60.0,
        t = escape(title)
    );
    for (index, (label, values)) in rows.iter().enumerate() {
        let y = top + index as f64 * row_height;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" font-size="12">{}</text>"#,
            label_width - 6.0,
            y + 14.0,
            escape(label)
        );
        let mut x = label_width;
        for (part, value) in values.iter().enumerate() {
            let w = *value as f64 / max * bar_width;
            if w > 0.0 {
                let _ = write!(
                    svg,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{}" fill="{}"><title>{}: {value}</title></rect>"#,
                    row_height - 6.0,
                    PALETTE[part % PALETTE.len()],
                    escape(series.get(part).map(String::as_str).unwrap_or(""))
                );
            }
            x += w;
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="12">{}</text>"#,
            x + 4.0,
            y + 14.0,
            values.iter().sum::<usize>()
        );
    }
    let legend_top = top + rows.len() as f64 * row_height + 10.0;
    for (index, name) in series.iter().enumerate() {
        let x = (index % 3) as f64 * 240.0;
        let y = legend_top + (index / 3) as f64 * 18.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            PALETTE[index % PALETTE.len()],
            x + 16.0,
            y + 11.0,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn render_html(report: &Report) -> String {
    let s = &report.summary;
    let mut categories: Vec<String> = SWITCHES.iter().map(|s| s.to_string()).collect();
    categories.extend(
        [
            "combination",
            "unattributed",
            "not-reproducible",
            "not-attributed-yet",
        ]
        .map(String::from),
    );
    let project_rows: Vec<(String, Vec<usize>)> = report
        .projects
        .iter()
        .filter(|p| p.status == Status::Ok)
        .map(|p| {
            // Each failure counted once: under its first fixing switch, or its verdict.
            let mut values = vec![0; categories.len()];
            for failure in &p.failures {
                let key = match &failure.attribution {
                    Some(a) => a
                        .fixed_by
                        .first()
                        .cloned()
                        .unwrap_or_else(|| a.verdict.as_str().to_string()),
                    None => "not-attributed-yet".to_string(),
                };
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
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>asyncbis breakage study</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}table{{border-collapse:collapse;margin:1em 0;font-size:14px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}}pre{{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px;max-height:30em}}code{{font-size:13px}}.bad{{color:#b00}}</style></head><body>
<h1>asyncbis breakage study</h1><p>Corpus <code>{}</code>, Python {}, asyncbis-compat {}{}; {} projects, {:.0} s wall for this invocation (results already in the cache are reused, not rerun).</p>"#,
        escape(&report.corpus),
        escape(&report.pythons.join(", ")),
        escape(&report.tool_version),
        report
            .shard
            .as_ref()
            .map(|s| format!(", shard {}", escape(s)))
            .unwrap_or_default(),
        s.projects,
        report.wall_seconds
    );
    if report.stock_only {
        html.push_str("<p><b>Stock-only run</b>: baselines without asyncbis (no comparison).</p>");
    }
    if let Some(profile) = &report.profile {
        let _ = write!(
            html,
            "<p>asyncbis profile: <b>{}</b> (its switch values: docs/switches.md, Profiles); each switch is probed by turning it off on top of the profile, and switches the profile turns off are not probed.</p>",
            escape(profile)
        );
    }
    if !report.always_off.is_empty() {
        let _ = write!(
            html,
            "<p>Switches kept off in every asyncbis run: {} (not attributed; their breakage is not counted).</p>",
            escape(&report.always_off.join(", "))
        );
    }
    let _ = write!(
        html,
        "<table><tr><th>projects compared</th><td>{} of {} ({})</td></tr><tr><th>tests passing on stock asyncio (first run)</th><td>{}</td></tr><tr><th>flaky on stock (ignored)</th><td>{}</td></tr><tr><th>newly failing under asyncbis</th><td>{}</td></tr><tr><th>newly passing</th><td>{}</td></tr><tr><th>verdicts</th><td>{}</td></tr><tr><th>attributed</th><td>{:.1}% of reproducible failures</td></tr><tr><th>raised by</th><td>{}</td></tr></table>",
        s.compared,
        s.projects,
        escape(&format_counts(&s.by_status)),
        s.stock_passing_tests,
        s.flaky_tests,
        s.newly_failing,
        s.newly_passing,
        escape(&format_counts(&s.by_verdict)),
        s.attributed_share * 100.0,
        escape(&format_counts(&s.by_owner))
    );
    html.push_str("<h2>Per project</h2>");
    html.push_str(&bar_chart(
        "Newly failing tests per project, by the switch that fixes them",
        &categories,
        &project_rows,
    ));
    html.push_str("<h2>Per switch</h2>");
    html.push_str(&bar_chart(
        "Tests passing again with the switch off",
        &[
            "only this switch".to_string(),
            "also other switches".to_string(),
        ],
        &switch_rows,
    ));
    html.push_str(&bar_chart(
        "Who raised the new failures",
        &owners,
        &owner_rows,
    ));
    html.push_str("<table><tr><th>project</th><th>python</th><th>status</th><th>stock passed/failed/errors/skipped</th><th>under asyncbis</th><th>flaky</th><th>newly failing</th><th>by switch</th><th>versions</th></tr>");
    for p in &report.projects {
        let counts = |i: usize| {
            p.runs
                .get(i)
                .map(|r| {
                    format!(
                        "{}/{}/{}/{}",
                        r.counts.passed,
                        r.counts.failed + r.counts.timeouts + r.counts.hung,
                        r.counts.errors,
                        r.counts.skipped
                    )
                })
                .unwrap_or_else(|| "-".into())
        };
        let status = match &p.reason {
            Some(reason) => format!(
                "<span class=bad>{}</span>: {}",
                status_name(p.status),
                escape(&one_line(reason, 200))
            ),
            None => status_name(p.status).to_string(),
        };
        let _ = write!(
            html,
            "<tr><td>{}-{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.name),
            escape(&p.version),
            escape(&p.python),
            status,
            counts(0),
            counts(2),
            p.flaky.len(),
            p.failures.len(),
            escape(&format_counts(&switch_counts(p))),
            escape(&key_versions(p))
        );
    }
    html.push_str("</table>");
    for p in report.projects.iter().filter(|p| p.note.is_some()) {
        let _ = write!(
            html,
            "<p><b>Note</b> on {} (py{}): {}</p>",
            escape(&p.name),
            escape(&p.python),
            escape(p.note.as_deref().unwrap_or(""))
        );
    }
    if !s.harness_only.is_empty() {
        html.push_str("<h2>Harness-only breakage</h2><p>Failures raised in the test harness (pytest, pytest-asyncio, AnyIO's plugin, unittest).</p><ul>");
        for (project, count) in &s.harness_only {
            let _ = write!(html, "<li>{}: {count}</li>", escape(project));
        }
        html.push_str("</ul>");
    }
    html.push_str("<h2>Failure signatures</h2>");
    for sig in &s.signatures {
        let g = &sig.signature;
        let _ = write!(
            html,
            "<details><summary><code>{}</code> × {} — <b>{}</b>: {} <i>in {} ({})</i>; fixed by {}</summary><p>projects: {}; sample: <code>{}</code></p><pre>{}</pre></details>",
            escape(&g.id),
            sig.tests,
            escape(&g.exc_type),
            escape(&one_line(&g.message, 140)),
            escape(&g.frame),
            g.owner.as_str(),
            escape(&format_counts(&sig.fixed_by)),
            escape(&sig.projects.join(", ")),
            escape(&sig.sample_test),
            escape(&sig.sample_traceback)
        );
    }
    html.push_str("<h2>Versions used</h2><ul>");
    for p in &report.projects {
        let _ = write!(
            html,
            "<li>{} on Python {}: {}</li>",
            escape(&p.name),
            escape(&p.python),
            escape(&key_versions(p))
        );
    }
    for wheel in &report.wheels {
        let _ = write!(
            html,
            "<li>asyncbis wheel for {}: <code>{}</code> ({})</li>",
            escape(&wheel.python),
            escape(&wheel.wheel),
            escape(&wheel.content_hash)
        );
    }
    html.push_str("</ul></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Attribution;
    use crate::results::{Counts, Outcome};
    use crate::study::{NewFailure, RunSummary};

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
            }),
            reruns: BTreeMap::new(),
            traceback: "Traceback <here>".into(),
        }
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
                failure("t::c", Owner::Harness, &[], Verdict::Combination),
                failure("t::d", Owner::Tests, &[], Verdict::Unattributed),
                failure("t::e", Owner::Tests, &[], Verdict::NotReproducible),
            ],
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
            shard: None,
            wall_seconds: 5.0,
            summary: summarize(&projects),
            projects,
        }
    }

    #[test]
    fn summary_counts_verdicts_switches_and_owners() {
        let s = sample_report().summary;
        assert_eq!((s.projects, s.compared), (2, 1));
        assert_eq!(s.by_status["skipped"], 1);
        assert_eq!(s.newly_failing, 5);
        assert_eq!(s.by_verdict["switch"], 2);
        // 3 of the 4 reproducible failures are explained (2 by a switch, 1 by the combination).
        assert!((s.attributed_share - 0.75).abs() < 1e-9);
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
        assert_eq!(s.by_owner["library"], 2);
        assert_eq!(s.harness_only["aiofoo"], 1);
        assert_eq!(s.signatures[0].tests, 2);
        assert_eq!(s.per_switch.len(), SWITCHES.len());
    }

    #[test]
    fn renders_markdown_and_self_contained_html() {
        let report = sample_report();
        let md = render_markdown(&report);
        assert!(md.contains("| root-task-group | 1 | 1 | aiofoo |"));
        assert!(md.contains("needs postgres \\| no apt"));
        assert!(md.contains("75.0% of reproducible failures"));
        let html = render_html(&report);
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
    fn empty_chart_does_not_divide_by_zero() {
        let svg = bar_chart("t", &["a".into()], &[("x".into(), vec![0])]);
        assert!(svg.contains("</svg>") && !svg.contains("NaN"));
    }
}

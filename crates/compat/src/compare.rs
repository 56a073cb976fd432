//! `compare`: the reports of one corpus under different profiles (and Pythons) side by side:
//! per Python, one table (a row per profile: projects with breakage, newly failing tests,
//! attributed share, top switches) and one chart (newly failing tests per profile, by project).
//! Written as compare.json (all numbers), compare.md and a self-contained compare.html.

use crate::analysis::{PROFILES, PROFILE_VALUES};
use crate::merge::Input;
use crate::report::{summarize, Chart, Report};
use crate::study::Status;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Switches named in a row's "top switches".
const TOP_SWITCHES: usize = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchCount {
    pub switch: String,
    /// Newly failing tests that pass with this switch off.
    pub tests: usize,
}

/// One report's results on one Python.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileRow {
    /// The profile's name ("seed" for a report without one).
    pub profile: String,
    /// The profile's switch values, in words.
    pub values: String,
    /// `--set` values on top of the profile.
    pub switch_values: Vec<String>,
    /// `--keep-off` switches.
    pub always_off: Vec<String>,
    /// `--ported`: the corpus's patches were applied (the port's effect, not the published
    /// projects').
    #[serde(default)]
    pub ported: bool,
    /// The row's name: the profile, its `--set` values, `--keep-off` switches and `ported`.
    pub label: String,
    /// The report.json it comes from.
    pub source: String,
    /// Set when the report covers only part of the corpus: which shards it holds.
    pub partial: Option<String>,
    /// The asyncbis wheel's content hash for this Python.
    pub wheel_hash: Option<String>,
    pub projects: usize,
    pub compared: usize,
    /// Compared projects with at least one newly failing test.
    pub projects_with_breakage: usize,
    pub newly_failing: usize,
    pub not_run: usize,
    pub attributed_share: f64,
    pub top_switches: Vec<SwitchCount>,
    /// Newly failing tests per compared project.
    pub per_project: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PythonComparison {
    pub python: String,
    pub rows: Vec<ProfileRow>,
}

/// compare.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub tool_version: String,
    pub generated_unix: u64,
    pub corpus: String,
    pub pythons: Vec<PythonComparison>,
    /// Differences between the inputs worth knowing (another asyncbis wheel, partial reports).
    pub warnings: Vec<String>,
}

fn profile_name(report: &Report) -> String {
    report.profile.clone().unwrap_or_else(|| "seed".into())
}

fn row_label(report: &Report) -> String {
    let mut label = profile_name(report);
    if !report.switch_values.is_empty() {
        let _ = write!(label, " + {}", report.switch_values.join(", "));
    }
    if !report.always_off.is_empty() {
        let _ = write!(label, ", keep-off {}", report.always_off.join(", "));
    }
    if report.ported {
        label.push_str(", ported");
    }
    label
}

/// Which part of the corpus a report holds, when it is not all of it.
fn partial(report: &Report) -> Option<String> {
    match (&report.merged, &report.shard) {
        (Some(merged), _) if !merged.missing.is_empty() => Some(format!(
            "shards {} only ({} missing)",
            merged.shards.join(", "),
            merged.missing.join(", ")
        )),
        (None, Some(shard)) => Some(format!("shard {shard} only")),
        _ => None,
    }
}

fn row(input: &Input, python: &str) -> ProfileRow {
    let report = &input.report;
    let projects: Vec<_> = report
        .projects
        .iter()
        .filter(|p| p.python == python)
        .cloned()
        .collect();
    let summary = summarize(&projects);
    let mut top: Vec<SwitchCount> = summary
        .per_switch
        .iter()
        .filter(|s| s.tests > 0)
        .map(|s| SwitchCount {
            switch: s.switch.clone(),
            tests: s.tests,
        })
        .collect();
    // Most tests first; ties in SWITCHES order (the sort is stable).
    top.sort_by_key(|s| std::cmp::Reverse(s.tests));
    top.truncate(TOP_SWITCHES);
    let per_project: BTreeMap<String, usize> = projects
        .iter()
        .filter(|p| p.status == Status::Ok)
        .map(|p| (p.name.clone(), p.failures.len()))
        .collect();
    let profile = profile_name(report);
    ProfileRow {
        values: PROFILE_VALUES
            .iter()
            .find(|(name, _)| *name == profile)
            .map(|(_, words)| words.to_string())
            .unwrap_or_else(|| "(unknown profile: see its report)".into()),
        profile,
        switch_values: report.switch_values.clone(),
        always_off: report.always_off.clone(),
        ported: report.ported,
        label: row_label(report),
        source: input.path.clone(),
        partial: partial(report),
        wheel_hash: report
            .wheels
            .iter()
            .find(|w| w.python == python)
            .map(|w| w.content_hash.clone()),
        projects: summary.projects,
        compared: summary.compared,
        projects_with_breakage: per_project.values().filter(|n| **n > 0).count(),
        newly_failing: summary.newly_failing,
        not_run: summary.not_run,
        attributed_share: summary.attributed_share,
        top_switches: top,
        per_project,
    }
}

/// Rows in profile order (seed, recommended, additive, additive+timeouts), then by label.
fn row_order(row: &ProfileRow) -> (usize, String) {
    let index = PROFILES
        .iter()
        .position(|p| *p == row.profile)
        .unwrap_or(PROFILES.len());
    (index, row.label.clone())
}

/// Puts the reports side by side. Refuses reports of different corpora, stock-only reports
/// and two reports of the same profile and Python (shards to merge first).
pub fn compare(inputs: &[Input]) -> Result<Comparison, String> {
    let Some(first) = inputs.first() else {
        return Err("compare needs at least one report (--from R/report.json, repeated)".into());
    };
    let mut warnings = Vec::new();
    for input in inputs {
        let report = &input.report;
        if report.corpus != first.report.corpus {
            return Err(format!(
                "{} is a report of corpus {} and {} of corpus {}: profiles are compared on one \
                 corpus; give reports of one corpus only",
                first.path, first.report.corpus, input.path, report.corpus
            ));
        }
        if report.stock_only {
            return Err(format!(
                "{} is a stock-only run (--stock-only): it has no asyncbis results to compare; \
                 leave it out",
                input.path
            ));
        }
        if let (Some(a), Some(b)) = (&first.report.corpus_hash, &report.corpus_hash) {
            if a != b {
                warnings.push(format!(
                    "the corpus manifest differs (content hash {a} in {}, {b} in {}): the \
                     profiles may have run different project lists or settings",
                    first.path, input.path
                ));
            }
        }
        if let Some(part) = partial(report) {
            warnings.push(format!(
                "{} holds part of the corpus ({part}): its numbers are not the whole corpus's; \
                 merge its shards with `asyncbis-compat merge` first",
                input.path
            ));
        }
    }
    let mut python_names: Vec<String> = Vec::new();
    for input in inputs {
        for python in &input.report.pythons {
            if !python_names.contains(python) {
                python_names.push(python.clone());
            }
        }
    }
    let mut pythons = Vec::new();
    for python in python_names {
        let mut rows: Vec<ProfileRow> = Vec::new();
        for input in inputs.iter().filter(|i| i.report.pythons.contains(&python)) {
            let row = row(input, &python);
            if let Some(other) = rows.iter().find(|r| r.label == row.label) {
                return Err(format!(
                    "{} and {} both hold {} on Python {python}: give each profile once per \
                     Python; for the shards of one run, merge them first (asyncbis-compat merge)",
                    other.source, row.source, row.label
                ));
            }
            if let Some(other) = rows
                .iter()
                .find(|r| r.wheel_hash.is_some() && r.wheel_hash != row.wheel_hash)
            {
                warnings.push(format!(
                    "the asyncbis wheel for Python {python} differs: {} in {}, {} in {}; the \
                     profiles were measured on different builds of asyncbis",
                    other.wheel_hash.as_deref().unwrap_or("?"),
                    other.source,
                    row.wheel_hash.as_deref().unwrap_or("none"),
                    row.source
                ));
            }
            rows.push(row);
        }
        rows.sort_by_key(row_order);
        pythons.push(PythonComparison { python, rows });
    }
    Ok(Comparison {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        generated_unix: inputs
            .iter()
            .map(|i| i.report.generated_unix)
            .max()
            .unwrap_or(0),
        corpus: first.report.corpus.clone(),
        pythons,
        warnings,
    })
}

/// Projects with breakage under some row, most newly failing tests (over all rows) first.
fn broken_projects(rows: &[ProfileRow]) -> Vec<String> {
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    for row in rows {
        for (project, count) in &row.per_project {
            *totals.entry(project).or_default() += count;
        }
    }
    let mut projects: Vec<(&str, usize)> = totals.into_iter().filter(|(_, n)| *n > 0).collect();
    projects.sort_by_key(|(name, n)| (std::cmp::Reverse(*n), *name));
    projects
        .into_iter()
        .map(|(name, _)| name.to_string())
        .collect()
}

fn top_text(row: &ProfileRow) -> String {
    if row.top_switches.is_empty() {
        return "-".into();
    }
    row.top_switches
        .iter()
        .map(|s| format!("{} {}", s.switch, s.tests))
        .collect::<Vec<_>>()
        .join(", ")
}

fn breakage_text(row: &ProfileRow) -> String {
    format!("{} of {}", row.projects_with_breakage, row.compared)
}

fn attributed_text(row: &ProfileRow) -> String {
    format!("{:.1}%", row.attributed_share * 100.0)
}

/// A project's cell in the per-project table: "-" where the row did not compare it.
fn cell(row: &ProfileRow, project: &str) -> String {
    row.per_project
        .get(project)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "-".into())
}

/// The switch-values cell's note on a `--ported` row.
const PORTED: &str = "--ported: the corpus's patches applied";

const INTRO: &str = "Newly failing: passed in both stock runs, fails under asyncbis with the \
                     profile's switch values. Attributed: the share of reproducible new failures \
                     explained by a named switch or a combination of two or more. Top switches: \
                     the switches whose turning off (on top of the profile) makes the most of \
                     them pass. Profiles and switches: docs/switches.md.";

pub fn render_markdown(comparison: &Comparison) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# asyncbis profiles compared\n");
    let _ = writeln!(
        md,
        "Corpus `{}`, asyncbis-compat {}. {INTRO}\n",
        comparison.corpus, comparison.tool_version
    );
    for warning in &comparison.warnings {
        let _ = writeln!(md, "**Warning**: {warning}\n");
    }
    for python in &comparison.pythons {
        let _ = writeln!(md, "## Python {}\n", python.python);
        let _ = writeln!(
            md,
            "| profile | switch values | projects with breakage | newly failing tests | attributed | top switches | report |\n|---|---|---:|---:|---:|---|---|"
        );
        for row in &python.rows {
            let mut values = row.values.clone();
            if !row.switch_values.is_empty() {
                let _ = write!(values, "; --set {}", row.switch_values.join(", "));
            }
            if !row.always_off.is_empty() {
                let _ = write!(values, "; --keep-off {}", row.always_off.join(", "));
            }
            if row.ported {
                let _ = write!(values, "; {PORTED}");
            }
            let source = match &row.partial {
                Some(part) => format!("`{}` (**partial**: {part})", row.source),
                None => format!("`{}`", row.source),
            };
            let _ = writeln!(
                md,
                "| {} | {values} | {} | {} | {} | {} | {source} |",
                row.label,
                breakage_text(row),
                row.newly_failing,
                attributed_text(row),
                top_text(row)
            );
        }
        let projects = broken_projects(&python.rows);
        if projects.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "\nNewly failing tests per project (`-`: not compared under that profile):\n"
        );
        let header: Vec<&str> = python.rows.iter().map(|r| r.label.as_str()).collect();
        let _ = writeln!(
            md,
            "| project | {} |\n|---|{}",
            header.join(" | "),
            "---:|".repeat(header.len())
        );
        for project in &projects {
            let cells: Vec<String> = python.rows.iter().map(|r| cell(r, project)).collect();
            let _ = writeln!(md, "| {project} | {} |", cells.join(" | "));
        }
        let _ = writeln!(md);
    }
    md
}

#[derive(Serialize)]
struct HtmlRow<'a> {
    row: &'a ProfileRow,
    breakage: String,
    attributed: String,
    top: String,
}

#[derive(Serialize)]
struct HtmlPython<'a> {
    python: &'a str,
    rows: Vec<HtmlRow<'a>>,
    chart: Chart,
    projects: Vec<String>,
    /// Per project, its cell in each row.
    cells: Vec<Vec<String>>,
}

#[derive(Serialize)]
struct HtmlContext<'a> {
    corpus: &'a str,
    tool_version: &'a str,
    intro: &'a str,
    ported: &'a str,
    warnings: &'a [String],
    pythons: Vec<HtmlPython<'a>>,
}

const TEMPLATE_COMPARE: &str = include_str!("../templates/compare.html");
const TEMPLATE_CHART: &str = include_str!("../templates/chart.html");

/// compare.html, self-contained (inline SVG, no script).
pub fn render_html(comparison: &Comparison) -> String {
    let pythons = comparison
        .pythons
        .iter()
        .map(|python| {
            let projects = broken_projects(&python.rows);
            let chart_rows: Vec<(String, Vec<usize>)> = python
                .rows
                .iter()
                .map(|row| {
                    let values = projects
                        .iter()
                        .map(|p| row.per_project.get(p).copied().unwrap_or(0))
                        .collect();
                    (row.label.clone(), values)
                })
                .collect();
            HtmlPython {
                python: &python.python,
                rows: python
                    .rows
                    .iter()
                    .map(|row| HtmlRow {
                        row,
                        breakage: breakage_text(row),
                        attributed: attributed_text(row),
                        top: top_text(row),
                    })
                    .collect(),
                chart: Chart::new(
                    &format!(
                        "Newly failing tests per profile, by project (Python {})",
                        python.python
                    ),
                    &projects,
                    &chart_rows,
                ),
                cells: projects
                    .iter()
                    .map(|p| python.rows.iter().map(|r| cell(r, p)).collect())
                    .collect(),
                projects,
            }
        })
        .collect();
    let context = HtmlContext {
        corpus: &comparison.corpus,
        tool_version: &comparison.tool_version,
        intro: INTRO,
        ported: PORTED,
        warnings: &comparison.warnings,
        pythons,
    };
    let mut env = minijinja::Environment::new();
    // The templates are compiled in and their context is fixed: an error is a bug of this tool.
    env.add_template("chart.html", TEMPLATE_CHART)
        .expect("templates/chart.html parses");
    env.add_template("compare.html", TEMPLATE_COMPARE)
        .expect("templates/compare.html parses");
    let mut html = env
        .get_template("compare.html")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
        .expect("templates/compare.html renders");
    html.push('\n');
    html
}

/// Writes compare.json, compare.md and compare.html into `out`.
pub fn write_comparison(comparison: &Comparison, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out)
        .map_err(|err| format!("cannot create {}: {err}", out.display()))?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|err| format!("cannot write {}: {err}", path.display()))
    };
    let json = serde_json::to_string_pretty(comparison)
        .map_err(|err| format!("cannot encode the comparison: {err}"))?;
    write("compare.json", json)?;
    write("compare.md", render_markdown(comparison))?;
    write("compare.html", render_html(comparison))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{failure, project, report};

    /// A report of the default corpus under `profile` on `pythons`, with `breakage` newly
    /// failing tests per project (each test fixed by `root-task-group`, except every third by
    /// `no-loop-policies` and aiob's by nothing).
    fn profile_report(profile: &str, pythons: &[&str], breakage: &[(&str, usize)]) -> Report {
        let projects = pythons
            .iter()
            .flat_map(|python| {
                breakage.iter().map(move |(name, n)| {
                    let failures = (0..*n)
                        .map(|i| {
                            let fixed: &[&str] = if *name == "aiob" {
                                &[]
                            } else if i % 3 == 2 {
                                &["no-loop-policies"]
                            } else {
                                &["root-task-group"]
                            };
                            failure(&format!("t::{i}"), fixed)
                        })
                        .collect();
                    project(name, python, failures)
                })
            })
            .collect();
        let mut r = report("default", pythons, projects);
        r.profile = (profile != "seed").then(|| profile.to_string());
        r
    }

    fn input(path: &str, report: Report) -> Input {
        Input {
            path: path.into(),
            report,
        }
    }

    fn profiles() -> Vec<Input> {
        vec![
            input(
                "additive/report.json",
                profile_report("additive", &["3.12.1"], &[("aioa", 1), ("aioc", 0)]),
            ),
            input(
                "seed/report.json",
                profile_report(
                    "seed",
                    &["3.12.1", "3.13.0"],
                    &[("aioa", 6), ("aiob", 2), ("aioc", 3)],
                ),
            ),
            input(
                "recommended/report.json",
                profile_report("recommended", &["3.12.1"], &[("aioa", 3), ("aioc", 0)]),
            ),
            input(
                "recommended-313/report.json",
                profile_report("recommended", &["3.13.0"], &[("aioa", 2)]),
            ),
        ]
    }

    #[test]
    fn profiles_side_by_side_per_python() {
        let comparison = compare(&profiles()).unwrap();
        assert!(comparison.warnings.is_empty(), "{:?}", comparison.warnings);
        let pythons: Vec<&str> = comparison
            .pythons
            .iter()
            .map(|p| p.python.as_str())
            .collect();
        assert_eq!(pythons, ["3.12.1", "3.13.0"]);
        let py312 = &comparison.pythons[0];
        let labels: Vec<&str> = py312.rows.iter().map(|r| r.label.as_str()).collect();
        // In profile order, whatever the order given.
        assert_eq!(labels, ["seed", "recommended", "additive"]);
        let seed = &py312.rows[0];
        // The seed report holds two Pythons: each row counts its own Python only.
        assert_eq!(
            (
                seed.projects,
                seed.projects_with_breakage,
                seed.newly_failing
            ),
            (3, 3, 11)
        );
        // aiob's 2 tests are unattributed: 9 of 11.
        assert!((seed.attributed_share - 9.0 / 11.0).abs() < 1e-9);
        assert_eq!(
            seed.top_switches,
            [
                SwitchCount {
                    switch: "root-task-group".into(),
                    tests: 6
                },
                SwitchCount {
                    switch: "no-loop-policies".into(),
                    tests: 3
                }
            ]
        );
        assert_eq!(seed.values, "every switch on");
        let recommended = &py312.rows[1];
        assert_eq!(
            (recommended.projects_with_breakage, recommended.compared),
            (1, 2)
        );
        assert!(recommended.values.contains("root-task-group=unretrieved"));
        assert_eq!(comparison.pythons[1].rows.len(), 2);
        assert_eq!(
            comparison.pythons[1].rows[1].source,
            "recommended-313/report.json"
        );

        let md = render_markdown(&comparison);
        assert!(md.contains("## Python 3.12.1") && md.contains("## Python 3.13.0"));
        assert!(
            md.contains(
                "| seed | every switch on | 3 of 3 | 11 | 81.8% | root-task-group 6, no-loop-policies 3 | `seed/report.json` |"
            ),
            "{md}"
        );
        assert!(md.contains("| additive | level-cancellation on, every other switch off | 1 of 2 | 1 | 100.0% | root-task-group 1 |"), "{md}");
        // Per project: most breakage first; "-" where a profile did not compare the project.
        assert!(
            md.contains("| project | seed | recommended | additive |"),
            "{md}"
        );
        assert!(
            md.contains("| aioa | 6 | 3 | 1 |\n| aioc | 3 | 0 | 0 |\n| aiob | 2 | - | - |"),
            "{md}"
        );

        let html = render_html(&comparison);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"));
        assert_eq!(html.matches("<svg").count(), 2, "one chart per Python");
        assert!(html.contains("Newly failing tests per profile, by project (Python 3.12.1)"));
        assert!(html.contains("<title>aioa: 6</title>"));
        assert!(html.contains("<title>aiob: 2</title>"));
        assert!(
            html.matches("http://").count()
                == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        let json = serde_json::to_string(&comparison).unwrap();
        let back: Comparison = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pythons[0].rows[0].per_project["aiob"], 2);
    }

    #[test]
    fn set_values_and_keep_off_make_rows_of_their_own() {
        let mut inputs = profiles();
        let mut next_tick = profile_report("recommended", &["3.12.1"], &[("aioa", 1)]);
        next_tick.switch_values = vec!["root-task-group=unretrieved-next-tick".into()];
        let mut kept = profile_report("seed", &["3.12.1"], &[("aioa", 4)]);
        kept.always_off = vec!["no-loop-policies".into()];
        inputs.push(input("next-tick/report.json", next_tick));
        inputs.push(input("kept/report.json", kept));
        let comparison = compare(&inputs).unwrap();
        let labels: Vec<&str> = comparison.pythons[0]
            .rows
            .iter()
            .map(|r| r.label.as_str())
            .collect();
        assert_eq!(
            labels,
            [
                "seed",
                "seed, keep-off no-loop-policies",
                "recommended",
                "recommended + root-task-group=unretrieved-next-tick",
                "additive"
            ]
        );
        let md = render_markdown(&comparison);
        assert!(md.contains("the rest on; --set root-task-group=unretrieved-next-tick |"));
        assert!(md.contains("every switch on; --keep-off no-loop-policies |"));
    }

    #[test]
    fn a_ported_run_is_a_row_of_its_own() {
        let mut inputs = profiles();
        let mut ported = profile_report("recommended", &["3.12.1"], &[("aioa", 0), ("aioc", 0)]);
        ported.ported = true;
        inputs.push(input("recommended-ported/report.json", ported));
        let comparison = compare(&inputs).unwrap();
        let rows = &comparison.pythons[0].rows;
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            ["seed", "recommended", "recommended, ported", "additive"]
        );
        assert!(rows[2].ported && !rows[1].ported);
        let md = render_markdown(&comparison);
        assert!(
            md.contains("; --ported: the corpus's patches applied | 0 of 2 | 0 |"),
            "{md}"
        );
        let html = render_html(&comparison);
        assert!(
            html.contains("; --ported: the corpus&#x27;s patches applied</td>"),
            "{html}"
        );
        // compare.json written before --ported existed still loads
        let mut json = serde_json::to_value(&comparison).unwrap();
        json["pythons"][0]["rows"][0]
            .as_object_mut()
            .unwrap()
            .remove("ported");
        let back: Comparison = serde_json::from_value(json).unwrap();
        assert!(!back.pythons[0].rows[0].ported);
    }

    #[test]
    fn reports_that_cannot_be_compared_are_refused() {
        let mut inputs = profiles();
        inputs[2].report.corpus = "quick".into();
        let err = compare(&inputs).unwrap_err();
        assert!(
            err.contains("additive/report.json is a report of corpus default and recommended/report.json of corpus quick: profiles are compared on one corpus"),
            "{err}"
        );
        let mut inputs = profiles();
        inputs[1].report.stock_only = true;
        let err = compare(&inputs).unwrap_err();
        assert!(
            err.contains("seed/report.json is a stock-only run"),
            "{err}"
        );
        // Two shards of one run, not merged.
        let mut inputs = profiles();
        let mut shard = profile_report("additive", &["3.12.1"], &[("aiob", 1)]);
        shard.shard = Some("2/2".into());
        inputs[0].report.shard = Some("1/2".into());
        inputs.push(input("additive-2/report.json", shard));
        let err = compare(&inputs).unwrap_err();
        assert!(
            err.contains("additive/report.json and additive-2/report.json both hold additive on Python 3.12.1")
                && err.contains("merge them first (asyncbis-compat merge)"),
            "{err}"
        );
        assert!(compare(&[]).unwrap_err().contains("--from"));
    }

    #[test]
    fn another_wheel_or_a_partial_report_is_a_warning() {
        let mut inputs = profiles();
        inputs[2].report.wheels[0].content_hash = "00000000000000bb".into();
        inputs[0].report.shard = Some("1/2".into());
        inputs[3].report.corpus_hash = Some("beef".into());
        let comparison = compare(&inputs).unwrap();
        let warnings = comparison.warnings.join("\n");
        assert!(
            warnings.contains("additive/report.json holds part of the corpus (shard 1/2 only)"),
            "{warnings}"
        );
        assert!(warnings.contains("the asyncbis wheel for Python 3.12.1 differs: 00000000000000aa in additive/report.json, 00000000000000bb in recommended/report.json"), "{warnings}");
        assert!(warnings.contains("the corpus manifest differs (content hash c0ffee in additive/report.json, beef in recommended-313/report.json)"), "{warnings}");
        let md = render_markdown(&comparison);
        assert!(md.contains("**Warning**: the asyncbis wheel for Python 3.12.1 differs"));
        assert!(
            md.contains("`additive/report.json` (**partial**: shard 1/2 only)"),
            "{md}"
        );
        assert!(render_html(&comparison).contains("<b>partial</b>: shard 1&#x2f;2 only"));
        // A merged report missing shards says which.
        let mut inputs = profiles();
        inputs[0].report.merged = Some(crate::report::Merged {
            shards: vec!["1/3".into(), "3/3".into()],
            missing: vec!["2/3".into()],
        });
        let comparison = compare(&inputs).unwrap();
        assert_eq!(
            comparison.pythons[0].rows[2].partial.as_deref(),
            Some("shards 1/3, 3/3 only (2/3 missing)")
        );
    }

    #[test]
    fn the_command_writes_compare_files() {
        let dir =
            std::env::temp_dir().join(format!("asyncbis-compat-compare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut args = vec!["compare".to_string()];
        for (i, input) in profiles().iter().enumerate() {
            let path = dir.join(format!("r{i}/report.json"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string(&input.report).unwrap()).unwrap();
            args.extend(["--from".into(), path.display().to_string()]);
        }
        let out = dir.join("out");
        args.extend(["--out".into(), out.display().to_string()]);
        assert_eq!(crate::main_with_args(args.clone()), 0);
        for name in ["compare.json", "compare.md", "compare.html"] {
            assert!(out.join(name).is_file(), "{name}");
        }
        let back: Comparison =
            serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap())
                .unwrap();
        assert_eq!(back.pythons.len(), 2);
        // The same report twice: refused, nothing written, status 2.
        let refused = dir.join("refused");
        let twice = vec![
            "compare".to_string(),
            "--from".into(),
            args[2].clone(),
            "--from".into(),
            args[2].clone(),
            "--out".into(),
            refused.display().to_string(),
        ];
        assert_eq!(crate::main_with_args(twice), 2);
        assert!(!refused.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! `merge`: the shard reports of one run (`run --shard I/N`) into the report of the whole run.
//!
//! The merged report is made from the per-project results, as a whole run makes it: the
//! projects in the order the whole run would list them, the summary counted again from them
//! (totals, per-switch counts, attributed share; the charts are drawn from these when rendered).
//! Reports that do not belong to one run are refused, each with what to do instead.

use crate::report::{summarize, Merged, Report};
use std::collections::BTreeMap;

/// A report and the path it was read from (named in messages).
#[derive(Debug)]
pub struct Input {
    pub path: String,
    pub report: Report,
}

/// The merged report, and what the caller should be told (differences that do not decide
/// results, an incomplete set).
#[derive(Debug)]
pub struct Merge {
    pub report: Report,
    pub warnings: Vec<String>,
}

/// The shard numbers a report holds (1-based) and how many shards its run has.
fn shards_of(input: &Input) -> Result<(Vec<usize>, usize), String> {
    let names: Vec<&str> = match (&input.report.merged, &input.report.shard) {
        (Some(merged), _) => merged.shards.iter().map(String::as_str).collect(),
        (None, Some(shard)) => vec![shard.as_str()],
        (None, None) => Vec::new(),
    };
    if names.is_empty() {
        return Err(format!(
            "{} is the report of a whole run (made without --shard): it has nothing to be merged \
             with; merge the reports of `asyncbis-compat run --shard I/N`, one per I",
            input.path
        ));
    }
    let mut count = None;
    let mut indices = Vec::new();
    for name in names {
        let (index, n) = crate::cli::parse_shard(name)
            .map_err(|err| format!("{}: its shard {err}", input.path))?;
        if count.is_some_and(|c| c != n) {
            return Err(format!(
                "{} holds shards of runs with different shard counts ({name} among others)",
                input.path
            ));
        }
        count = Some(n);
        indices.push(index);
    }
    Ok((indices, count.unwrap_or(1)))
}

fn sorted(items: &[String]) -> Vec<String> {
    let mut items = items.to_vec();
    items.sort();
    items
}

fn shown(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Refuses `b` unless it comes from the same run settings as `a`: corpus, Python, --ported,
/// profile, switch values, keep-off, asyncbis wheel.
fn check_same_run(a: &Input, b: &Input) -> Result<(), String> {
    let (ra, rb) = (&a.report, &b.report);
    let differ = |what: &str, va: String, vb: String, todo: &str| {
        Err(format!(
            "{} and {} differ in {what} ({va} in the first, {vb} in the second): {todo}",
            a.path, b.path
        ))
    };
    if ra.corpus != rb.corpus {
        return differ(
            "corpus",
            ra.corpus.clone(),
            rb.corpus.clone(),
            "merge the shards of one corpus only",
        );
    }
    if let (Some(ha), Some(hb)) = (&ra.corpus_hash, &rb.corpus_hash) {
        if ha != hb {
            return differ(
                "corpus manifest (its content hash)",
                ha.clone(),
                hb.clone(),
                "the manifest changed between the shard runs, so they may have split different \
                 project lists; rerun the older shards with the current manifest",
            );
        }
    }
    if sorted(&ra.only) != sorted(&rb.only) {
        return differ(
            "--only",
            shown(&ra.only),
            shown(&rb.only),
            "shards split the same selection; run every shard with the same --only",
        );
    }
    if ra.pythons != rb.pythons {
        return differ(
            "Python",
            ra.pythons.join(", "),
            rb.pythons.join(", "),
            "merge the shards of one set of --python; put Pythons side by side with \
             `asyncbis-compat compare`",
        );
    }
    if ra.stock_only != rb.stock_only {
        return differ(
            "--stock-only",
            ra.stock_only.to_string(),
            rb.stock_only.to_string(),
            "merge stock-only shards with stock-only shards only",
        );
    }
    if ra.ported != rb.ported {
        let name = |ported: bool| if ported { "ported" } else { "not ported" }.to_string();
        return differ(
            "--ported",
            name(ra.ported),
            name(rb.ported),
            "merge ported shards with ported shards only; put a port's effect side by side \
             with the published projects with `asyncbis-compat compare`",
        );
    }
    if ra.profile != rb.profile {
        return differ(
            "profile",
            ra.profile.clone().unwrap_or_else(|| "seed".into()),
            rb.profile.clone().unwrap_or_else(|| "seed".into()),
            "merge the shards of one profile; put profiles side by side with \
             `asyncbis-compat compare`",
        );
    }
    if sorted(&ra.switch_values) != sorted(&rb.switch_values) {
        return differ(
            "switch values (--set)",
            shown(&ra.switch_values),
            shown(&rb.switch_values),
            "merge the shards of one set of switch values; put them side by side with \
             `asyncbis-compat compare`",
        );
    }
    if sorted(&ra.always_off) != sorted(&rb.always_off) {
        return differ(
            "--keep-off",
            shown(&ra.always_off),
            shown(&rb.always_off),
            "merge the shards of one --keep-off set; rerun the odd shards with the same --keep-off",
        );
    }
    let wheels = |r: &Report| -> BTreeMap<String, String> {
        r.wheels
            .iter()
            .map(|w| (w.python.clone(), w.content_hash.clone()))
            .collect()
    };
    let (wa, wb) = (wheels(ra), wheels(rb));
    if wa != wb {
        let describe = |w: &BTreeMap<String, String>| {
            let parts: Vec<String> = w.iter().map(|(p, h)| format!("{h} for {p}")).collect();
            shown(&parts)
        };
        return differ(
            "asyncbis wheel",
            describe(&wa),
            describe(&wb),
            "the shards tested different builds of asyncbis; rerun the odd shards with the \
             same wheel (scripts/study.sh builds the same wheel from the same sources)",
        );
    }
    Ok(())
}

/// The projects of `groups` (each group's projects in its own order; `owner[s]` is the group
/// holding shard s+1 of `count`) in the order of the whole run: per Python, the corpus order
/// that `shard()` dealt round-robin.
fn whole_run_order(
    pythons: &[String],
    groups: &[Vec<crate::study::ProjectResult>],
    owner: &[Option<usize>],
) -> Vec<crate::study::ProjectResult> {
    let mut order = Vec::new();
    let mut python_names: Vec<String> = pythons.to_vec();
    for group in groups {
        for project in group {
            if !python_names.contains(&project.python) {
                python_names.push(project.python.clone());
            }
        }
    }
    for python in &python_names {
        let mut queues: Vec<std::collections::VecDeque<&crate::study::ProjectResult>> = groups
            .iter()
            .map(|g| g.iter().filter(|p| &p.python == python).collect())
            .collect();
        let mut position = 0;
        while queues.iter().any(|q| !q.is_empty()) {
            if let Some(group) = owner[position % owner.len()] {
                if let Some(project) = queues[group].pop_front() {
                    order.push(project.clone());
                }
            }
            position += 1;
        }
    }
    order
}

/// Merges shard reports of one run. Refuses inputs that do not belong together; a set with
/// shards missing gives a report that says so (`merged.missing`) and a warning.
pub fn merge(inputs: &[Input]) -> Result<Merge, String> {
    let Some(first) = inputs.first() else {
        return Err("merge needs at least one report (--from R/report.json, repeated)".into());
    };
    let mut warnings = Vec::new();
    let (_, count) = shards_of(first)?;
    let mut owner: Vec<Option<usize>> = vec![None; count];
    let mut seen_projects: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (index, input) in inputs.iter().enumerate() {
        check_same_run(first, input)?;
        let (shards, n) = shards_of(input)?;
        if n != count {
            return Err(format!(
                "{} is from a run in {count} shards and {} from one in {n}: the shards of one \
                 run share their N (--shard I/N); merge shards of one run",
                first.path, input.path
            ));
        }
        for shard in shards {
            if let Some(other) = owner[shard - 1] {
                return Err(format!(
                    "shard {shard}/{count} is in both {} and {}: give each shard once",
                    inputs[other].path, input.path
                ));
            }
            owner[shard - 1] = Some(index);
        }
        for project in &input.report.projects {
            let key = (project.name.clone(), project.python.clone());
            if let Some(other) = seen_projects.insert(key, index) {
                return Err(format!(
                    "project {} (Python {}) is in both {} and {}: each project belongs to one \
                     shard; were these shards split from different corpora or --only lists?",
                    project.name, project.python, inputs[other].path, input.path
                ));
            }
        }
        if input.report.tool_version != first.report.tool_version {
            warnings.push(format!(
                "{} was made by asyncbis-compat {} and {} by {}",
                first.path, first.report.tool_version, input.path, input.report.tool_version
            ));
        }
    }
    let name = |i: usize| format!("{}/{count}", i + 1);
    let shards: Vec<String> = (0..count)
        .filter(|&i| owner[i].is_some())
        .map(name)
        .collect();
    let missing: Vec<String> = (0..count)
        .filter(|&i| owner[i].is_none())
        .map(name)
        .collect();
    if !missing.is_empty() {
        warnings.push(format!(
            "partial: {} missing (the report holds {}); run the missing shards with `asyncbis-compat run \
             --shard I/N` and the same options, then merge again with every shard",
            if missing.len() == 1 {
                format!("shard {} is", missing[0])
            } else {
                format!("shards {} are", missing.join(", "))
            },
            shards.join(", ")
        ));
    }
    let groups: Vec<Vec<crate::study::ProjectResult>> = inputs
        .iter()
        .map(|input| input.report.projects.clone())
        .collect();
    let projects = whole_run_order(&first.report.pythons, &groups, &owner);
    let base = &first.report;
    let report = Report {
        tool_version: base.tool_version.clone(),
        generated_unix: inputs
            .iter()
            .map(|i| i.report.generated_unix)
            .max()
            .unwrap_or(0),
        corpus: base.corpus.clone(),
        pythons: base.pythons.clone(),
        wheels: base.wheels.clone(),
        stock_only: base.stock_only,
        always_off: base.always_off.clone(),
        profile: base.profile.clone(),
        switch_values: base.switch_values.clone(),
        shard: None,
        ported: base.ported,
        corpus_hash: inputs.iter().find_map(|i| i.report.corpus_hash.clone()),
        only: base.only.clone(),
        merged: Some(Merged { shards, missing }),
        wall_seconds: inputs.iter().map(|i| i.report.wall_seconds).sum(),
        summary: summarize(&projects),
        projects,
    };
    Ok(Merge { report, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{failure, project, report};
    use crate::report::{render_html, render_markdown};
    use crate::study::ProjectResult;

    const PYTHONS: &[&str] = &["3.12.1", "3.13.0"];

    /// Five projects per Python, three of them breaking in different ways.
    fn projects(python: &str) -> Vec<ProjectResult> {
        vec![
            project(
                "aioa",
                python,
                vec![
                    failure("t::a1", &["root-task-group"]),
                    failure("t::a2", &["level-cancellation", "task-cancel-level"]),
                ],
            ),
            project("aiob", python, vec![]),
            project("aioc", python, vec![failure("t::c1", &[])]),
            project("aiod", python, vec![failure("t::d1", &["root-task-group"])]),
            project("aioe", python, vec![]),
        ]
    }

    /// The whole run, and its shard reports as `run --shard I/N` writes them: the corpus dealt
    /// round-robin by `shard()`, each shard run on every Python.
    fn whole_and_shards(count: usize) -> (Report, Vec<Report>) {
        let corpus: Vec<ProjectResult> = projects("x");
        let whole_projects: Vec<ProjectResult> =
            PYTHONS.iter().flat_map(|py| projects(py)).collect();
        let whole = report("default", PYTHONS, whole_projects);
        let shards = (1..=count)
            .map(|index| {
                let names: Vec<String> = crate::shard(&corpus, index, count)
                    .into_iter()
                    .map(|p| p.name)
                    .collect();
                let mine: Vec<ProjectResult> = PYTHONS
                    .iter()
                    .flat_map(|py| projects(py))
                    .filter(|p| names.contains(&p.name))
                    .collect();
                let mut shard = report("default", PYTHONS, mine);
                shard.shard = Some(format!("{index}/{count}"));
                shard.wall_seconds = index as f64;
                shard
            })
            .collect();
        (whole, shards)
    }

    fn inputs(reports: &[Report]) -> Vec<Input> {
        reports
            .iter()
            .enumerate()
            .map(|(i, r)| Input {
                path: format!("s{}/report.json", i + 1),
                report: r.clone(),
            })
            .collect()
    }

    fn json<T: serde::Serialize>(value: &T) -> String {
        serde_json::to_string_pretty(value).unwrap()
    }

    /// Everything below the header line (which names the shards and the wall time).
    fn body(text: &str, header: &str) -> String {
        text.lines()
            .filter(|l| !l.starts_with(header))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn merging_the_shards_gives_the_whole_run_report() {
        let (whole, shards) = whole_and_shards(2);
        // Given in any order.
        let reversed: Vec<Report> = shards.iter().rev().cloned().collect();
        let merged = merge(&inputs(&reversed)).unwrap();
        assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
        let report = merged.report;
        assert_eq!(json(&report.projects), json(&whole.projects));
        assert_eq!(json(&report.summary), json(&whole.summary));
        assert_eq!(report.summary.newly_failing, 8);
        assert_eq!(
            report.merged,
            Some(Merged {
                shards: vec!["1/2".into(), "2/2".into()],
                missing: vec![]
            })
        );
        assert_eq!((report.shard.clone(), report.wall_seconds), (None, 3.0));
        let md = render_markdown(&report, None);
        assert_eq!(
            body(&md, "Corpus `"),
            body(&render_markdown(&whole, None), "Corpus `")
        );
        assert!(
            md.contains(
                ", merged from shards 1/2, 2/2; 10 projects, 3 s wall summed over the shard runs"
            ),
            "{md}"
        );
        assert!(!md.contains("Partial report"));
        let html = render_html(&report, None);
        assert_eq!(
            body(&html, "<p>Corpus <code>"),
            body(&render_html(&whole, None), "<p>Corpus <code>")
        );
        // Three shards, as well.
        let (_, three) = whole_and_shards(3);
        let report = merge(&inputs(&three)).unwrap().report;
        assert_eq!(json(&report.projects), json(&whole.projects));
        assert_eq!(json(&report.summary), json(&whole.summary));
    }

    #[test]
    fn a_partial_set_is_merged_and_says_which_shards_are_missing() {
        let (whole, shards) = whole_and_shards(3);
        let partial = merge(&inputs(&[shards[0].clone(), shards[2].clone()])).unwrap();
        assert_eq!(partial.warnings.len(), 1);
        assert!(
            partial.warnings[0]
                .contains("partial: shard 2/3 is missing (the report holds 1/3, 3/3)")
                && partial.warnings[0].contains("--shard I/N"),
            "{}",
            partial.warnings[0]
        );
        let report = partial.report;
        assert_eq!(report.merged.as_ref().unwrap().missing, vec!["2/3"]);
        // aiob and aioe are shard 2's projects (dealt round-robin).
        assert!(report
            .projects
            .iter()
            .all(|p| p.name != "aiob" && p.name != "aioe"));
        assert_eq!(report.summary.projects, 6);
        assert_eq!(report.summary.newly_failing, whole.summary.newly_failing);
        let text = "shard 2/3 of this run is missing; the projects of that shard are not in this \
                    report, and its totals count only the shards it holds (1/3, 3/3).";
        let md = render_markdown(&report, None);
        assert!(md.contains(&format!("**Partial report**: {text}")), "{md}");
        // minijinja escapes '/' as &#x2f;
        let html_text = text.replace('/', "&#x2f;");
        let html = render_html(&report, None);
        assert!(
            html.contains(&format!("<b>Partial report</b>: {html_text}")),
            "{html}"
        );
        // Two missing.
        let two = merge(&inputs(&shards[..1])).unwrap();
        assert!(two.warnings[0].contains("shards 2/3, 3/3 are missing"));
        // The partial report counts as its shards: merged with the missing one, it is whole.
        let rest = Input {
            path: "s2/report.json".into(),
            report: shards[1].clone(),
        };
        let first = Input {
            path: "partial/report.json".into(),
            report,
        };
        let complete = merge(&[first, rest]).unwrap();
        assert!(complete.warnings.is_empty());
        assert_eq!(json(&complete.report.projects), json(&whole.projects));
        assert_eq!(complete.report.merged.unwrap().missing.len(), 0);
    }

    /// `merge` of the two shards with `change` applied to the second: its error.
    fn refusal(change: impl Fn(&mut Report)) -> String {
        let (_, mut shards) = whole_and_shards(2);
        change(&mut shards[1]);
        match merge(&inputs(&shards)) {
            Ok(_) => panic!("merged reports that do not belong together"),
            Err(err) => err,
        }
    }

    #[test]
    fn reports_of_different_runs_are_refused_with_what_to_do() {
        for (change, expected) in [
            (
                Box::new(|r: &mut Report| r.corpus = "quick".into()) as Box<dyn Fn(&mut Report)>,
                "differ in corpus (default in the first, quick in the second): merge the shards of one corpus only",
            ),
            (
                Box::new(|r: &mut Report| r.corpus_hash = Some("beef".into())),
                "corpus manifest (its content hash) (c0ffee in the first, beef in the second): the manifest changed",
            ),
            (
                Box::new(|r: &mut Report| r.only = vec!["aioa".into()]),
                "differ in --only (none in the first, aioa in the second): shards split the same selection",
            ),
            (
                Box::new(|r: &mut Report| r.pythons = vec!["3.12.1".into()]),
                "differ in Python (3.12.1, 3.13.0 in the first, 3.12.1 in the second): merge the shards of one set of --python",
            ),
            (
                Box::new(|r: &mut Report| r.ported = true),
                "differ in --ported (not ported in the first, ported in the second): merge ported shards with ported shards only",
            ),
            (
                Box::new(|r: &mut Report| r.profile = Some("recommended".into())),
                "differ in profile (seed in the first, recommended in the second): merge the shards of one profile; put profiles side by side",
            ),
            (
                Box::new(|r: &mut Report| r.switch_values = vec!["root-task-group=unretrieved".into()]),
                "differ in switch values (--set) (none in the first, root-task-group=unretrieved in the second)",
            ),
            (
                Box::new(|r: &mut Report| r.wheels[1].content_hash = "00000000000000bb".into()),
                "differ in asyncbis wheel (00000000000000aa for 3.12.1, 00000000000000aa for 3.13.0 in the first, 00000000000000aa for 3.12.1, 00000000000000bb for 3.13.0 in the second): the shards tested different builds",
            ),
            (
                Box::new(|r: &mut Report| r.always_off = vec!["no-loop-policies".into()]),
                "differ in --keep-off (none in the first, no-loop-policies in the second)",
            ),
            (
                Box::new(|r: &mut Report| r.stock_only = true),
                "differ in --stock-only",
            ),
            (
                Box::new(|r: &mut Report| r.shard = Some("1/2".into())),
                "shard 1/2 is in both s1/report.json and s2/report.json: give each shard once",
            ),
            (
                Box::new(|r: &mut Report| r.shard = Some("2/3".into())),
                "s1/report.json is from a run in 2 shards and s2/report.json from one in 3",
            ),
            (
                Box::new(|r: &mut Report| r.shard = None),
                "s2/report.json is the report of a whole run (made without --shard): it has nothing to be merged with",
            ),
            (
                Box::new(|r: &mut Report| {
                    let extra = project("aioa", "3.12.1", vec![]);
                    r.projects.push(extra);
                }),
                "project aioa (Python 3.12.1) is in both s1/report.json and s2/report.json",
            ),
        ] {
            let err = refusal(change);
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
        // Switch values and keep-off sets are sets: their order does not matter.
        let (_, mut shards) = whole_and_shards(2);
        for (shard, values) in shards.iter_mut().zip([["a=b", "c=d"], ["c=d", "a=b"]]) {
            shard.switch_values = values.iter().map(|v| v.to_string()).collect();
        }
        assert!(merge(&inputs(&shards)).is_ok());
        // A reports from an older tool (no corpus hash) is compared by corpus name only.
        let (_, mut shards) = whole_and_shards(2);
        shards[0].corpus_hash = None;
        assert!(merge(&inputs(&shards)).is_ok());
        assert!(merge(&[]).unwrap_err().contains("--from"));
        // Ported shards merge into a ported report.
        let (_, mut shards) = whole_and_shards(2);
        for shard in &mut shards {
            shard.ported = true;
        }
        assert!(merge(&inputs(&shards)).unwrap().report.ported);
    }

    #[test]
    fn a_committed_report_split_into_shards_merges_back_into_itself() {
        // Real data: the committed quick-corpus report, dealt into shards as `run --shard`
        // deals the corpus (per Python, the same projects).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../report/quick-py3.12/report.json"
        );
        let whole = Report::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(whole.projects.len() >= 5);
        for count in [2, 4] {
            let shards: Vec<Report> = (1..=count)
                .map(|index| {
                    let mut shard = whole.clone();
                    shard.projects = crate::shard(&whole.projects, index, count);
                    shard.summary = summarize(&shard.projects);
                    shard.shard = Some(format!("{index}/{count}"));
                    shard
                })
                .collect();
            let merged = merge(&inputs(&shards)).unwrap().report;
            assert_eq!(json(&merged.projects), json(&whole.projects));
            assert_eq!(json(&merged.summary), json(&whole.summary));
            assert_eq!(
                body(&render_markdown(&merged, None), "Corpus `"),
                body(&render_markdown(&whole, None), "Corpus `")
            );
        }
    }

    #[test]
    fn a_different_tool_version_is_a_warning() {
        let (_, mut shards) = whole_and_shards(2);
        shards[1].tool_version = "0.2.0".into();
        let merged = merge(&inputs(&shards)).unwrap();
        assert_eq!(
            merged.warnings,
            ["s1/report.json was made by asyncbis-compat 0.1.0 and s2/report.json by 0.2.0"]
        );
    }

    #[test]
    fn the_command_writes_the_report_and_exits_1_when_partial() {
        let dir =
            std::env::temp_dir().join(format!("asyncbis-compat-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (whole, shards) = whole_and_shards(3);
        let mut args = vec!["merge".to_string()];
        for (i, shard) in shards.iter().enumerate() {
            let path = dir.join(format!("s{i}/report.json"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, json(shard)).unwrap();
            args.extend(["--from".into(), path.display().to_string()]);
        }
        let out = dir.join("merged");
        args.extend(["--out".into(), out.display().to_string()]);
        assert_eq!(crate::main_with_args(args.clone()), 0);
        let text = std::fs::read_to_string(out.join("report.json")).unwrap();
        let back = Report::from_json(&text).unwrap();
        assert_eq!(json(&back.projects), json(&whole.projects));
        assert!(out.join("report.md").is_file() && out.join("report.html").is_file());
        // Without the last shard: written, partial, status 1.
        let partial: Vec<String> = args[..5]
            .iter()
            .cloned()
            .chain(args[7..].iter().cloned())
            .collect();
        assert_eq!(crate::main_with_args(partial), 1);
        let text = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(text.contains("**Partial report**: shard 3/3"), "{text}");
        // A refusal writes nothing and exits 2.
        let refused = dir.join("refused");
        let twice = vec![
            "merge".to_string(),
            "--from".into(),
            args[2].clone(),
            "--from".into(),
            args[2].clone(),
            "--out".into(),
            refused.display().to_string(),
        ];
        assert_eq!(crate::main_with_args(twice), 2);
        assert!(!refused.exists());
        let missing = vec![
            "merge".to_string(),
            "--from".into(),
            dir.join("nope.json").display().to_string(),
        ];
        assert_eq!(crate::main_with_args(missing), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Pure decisions: flaky tests, newly failing tests, and which switch a failure belongs to.

use crate::results::{ExceptionInfo, Outcome, TestRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The behaviour switches (docs/switches.md; asyncbis.switches.NAMES), in the
/// order they are tried (after the harness switch).
pub const SWITCHES: &[&str] = &[
    "root-task-group",
    "level-cancellation",
    "task-cancel-level",
    "inline-shield",
    "scoped-timeouts",
    "graceful-signals",
    "no-loop-policies",
    "no-task-factory",
    "structured-exit",
    "scoped-taskgroups",
    "sniffio-name",
];

/// The asyncbis profiles (asyncbis.switches.PROFILES) a study can run under (`--profile`);
/// their switch values are asked from the installed asyncbis.
pub const PROFILES: &[&str] = &["seed", "recommended", "additive", "additive+timeouts"];

/// The switch behind test-harness breakage (pytest-asyncio's event-loop-policy calls): the
/// attribution reruns try it first and settle the tests it fixes.
pub const HARNESS_SWITCH: &str = "no-loop-policies";

/// How one stock-vs-asyncbis comparison came out.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Outcome differed between the two stock runs, or listed as known flaky.
    pub flaky: Vec<String>,
    /// Passed in both stock runs, failed (or never ran) under asyncbis; with the asyncbis record.
    pub newly_failing: Vec<TestRecord>,
    /// Failed in both stock runs, passed under asyncbis.
    pub newly_passing: Vec<String>,
}

fn outcome_class(outcome: Option<Outcome>) -> &'static str {
    match outcome {
        None => "absent",
        Some(Outcome::Passed) => "passed",
        Some(Outcome::Skipped) => "skipped",
        Some(_) => "failed",
    }
}

pub fn compare(
    stock_first: &BTreeMap<String, TestRecord>,
    stock_second: &BTreeMap<String, TestRecord>,
    asyncbis: &BTreeMap<String, TestRecord>,
    asyncbis_was_killed: bool,
    known_flaky: &[String],
) -> Comparison {
    let mut comparison = Comparison::default();
    let all_ids: BTreeSet<&String> = stock_first.keys().chain(stock_second.keys()).collect();
    // Collection errors name a module; they explain the absence of that module's tests.
    let collect_errors: Vec<&TestRecord> =
        asyncbis.values().filter(|r| r.phase == "collect").collect();
    for id in all_ids {
        let first = stock_first.get(id).map(|r| r.outcome);
        let second = stock_second.get(id).map(|r| r.outcome);
        let is_known_flaky = known_flaky
            .iter()
            .any(|f| id == f || id.starts_with(&format!("{f}[")));
        if is_known_flaky || outcome_class(first) != outcome_class(second) {
            comparison.flaky.push(id.clone());
            continue;
        }
        let under_asyncbis = asyncbis.get(id);
        match (first, under_asyncbis) {
            (Some(Outcome::Passed), Some(record)) if record.outcome.is_failure() => {
                comparison.newly_failing.push(record.clone())
            }
            (Some(Outcome::Passed), None) => {
                let mut record = match collect_errors.iter().find(|c| is_inside(id, &c.nodeid)) {
                    Some(collect_error) => (*collect_error).clone(),
                    None => not_run_record(asyncbis_was_killed),
                };
                record.nodeid = id.clone();
                comparison.newly_failing.push(record);
            }
            (Some(outcome), Some(record))
                if outcome.is_failure() && record.outcome == Outcome::Passed =>
            {
                comparison.newly_passing.push(id.clone())
            }
            _ => {}
        }
    }
    comparison
}

/// Whether a test node id lies inside a collected node (module or package path).
fn is_inside(test_id: &str, collector_id: &str) -> bool {
    !collector_id.is_empty()
        && (test_id.starts_with(&format!("{collector_id}::"))
            || test_id.starts_with(&format!("{collector_id}/")))
}

fn not_run_record(killed: bool) -> TestRecord {
    TestRecord {
        nodeid: String::new(),
        outcome: if killed {
            Outcome::Hung
        } else {
            Outcome::Error
        },
        phase: "call".into(),
        duration: 0.0,
        exception: Some(ExceptionInfo {
            exc_type: "NotRun".into(),
            message: if killed {
                "the suite hit its wall-clock cap before this test ran".into()
            } else {
                "the test did not run under asyncbis (the session ended early)".into()
            },
            frames: Vec::new(),
            group: None,
        }),
        longrepr: String::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Turning one switch off (any of `fixed_by`) makes the test pass.
    Switch,
    /// No single switch fixes it, all switches off does.
    Combination,
    /// Fails even with every switch off: asyncbis's own behaviour (or bug), not a switch.
    Unattributed,
    /// Passes when rerun alone with every switch on: order-dependent or flaky under asyncbis.
    NotReproducible,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Switch => "switch",
            Verdict::Combination => "combination",
            Verdict::Unattributed => "unattributed",
            Verdict::NotReproducible => "not-reproducible",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub verdict: Verdict,
    /// Every switch that, turned off alone, made the test pass (in SWITCHES order).
    pub fixed_by: Vec<String>,
    /// For a combination: the switches that, left on alone (all others off), break the test.
    #[serde(default)]
    pub involved: Vec<String>,
}

/// Outcomes of one test across the attribution reruns.
#[derive(Debug, Default, Clone)]
pub struct RerunOutcomes {
    /// Rerun alone with every switch on.
    pub confirm: Option<Outcome>,
    /// Rerun with each switch off, by switch name.
    pub switch_off: BTreeMap<String, Option<Outcome>>,
    /// Rerun with all switches off (only asked when no single switch fixed it).
    pub all_off: Option<Outcome>,
    /// For combinations: rerun with only this switch on, by switch name.
    pub only_on: BTreeMap<String, Option<Outcome>>,
}

pub fn attribute(outcomes: &RerunOutcomes) -> Attribution {
    let passed = |o: &Option<Outcome>| *o == Some(Outcome::Passed);
    if passed(&outcomes.confirm) {
        return Attribution {
            verdict: Verdict::NotReproducible,
            fixed_by: Vec::new(),
            involved: Vec::new(),
        };
    }
    let fixed_by: Vec<String> = SWITCHES
        .iter()
        .filter(|switch| outcomes.switch_off.get(**switch).is_some_and(passed))
        .map(|switch| switch.to_string())
        .collect();
    let verdict = if !fixed_by.is_empty() {
        Verdict::Switch
    } else if passed(&outcomes.all_off) {
        Verdict::Combination
    } else {
        Verdict::Unattributed
    };
    // A switch is involved when, left on with every other switch off, the test still fails.
    let involved = if verdict == Verdict::Combination {
        SWITCHES
            .iter()
            .filter(|switch| {
                outcomes
                    .only_on
                    .get(**switch)
                    .is_some_and(|o| o.is_some_and(Outcome::is_failure))
            })
            .map(|switch| switch.to_string())
            .collect()
    } else {
        Vec::new()
    };
    Attribution {
        verdict,
        fixed_by,
        involved,
    }
}

/// Node ids that need the "one switch on" reruns: those only all-switches-off fixes.
pub fn combinations(outcomes: &BTreeMap<String, RerunOutcomes>) -> Vec<String> {
    outcomes
        .iter()
        .filter(|(_, o)| attribute(o).verdict == Verdict::Combination)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Node ids still needing the all-switches-off rerun: not reproducible ones and ones a single
/// switch already explains are settled.
pub fn needs_all_off(outcomes: &BTreeMap<String, RerunOutcomes>) -> Vec<String> {
    outcomes
        .iter()
        .filter(|(_, o)| {
            let attribution = attribute(o);
            attribution.verdict == Verdict::Unattributed
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// What the asyncbis run's stats files prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationVerdict {
    /// Asyncbis tasks ran.
    Activated,
    /// The hook ran and tests newly fail, yet no task was created: they failed before their
    /// first task (a harness refusing a change, an import-time error). Real breakage.
    PatchedButNoTask,
    /// No stats at all: the activation hook never ran. An error.
    HookNeverRan,
    /// The hook ran, no task was created and nothing changed: not a pass, an error.
    NoTaskNoChange,
}

pub fn judge_activation(processes: usize, tasks: u64, newly_failing: usize) -> ActivationVerdict {
    match (processes, tasks, newly_failing) {
        (0, _, _) => ActivationVerdict::HookNeverRan,
        (_, 0, 0) => ActivationVerdict::NoTaskNoChange,
        (_, 0, _) => ActivationVerdict::PatchedButNoTask,
        _ => ActivationVerdict::Activated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tool_tries_every_switch_the_library_has() {
        // The names between `NAMES: tuple[str, ...] = (` and `)` in the library's switches.py.
        let source = include_str!("../../../python/asyncbis/switches.py");
        let start = source
            .find("NAMES: tuple[str, ...] = (")
            .expect("NAMES in switches.py");
        let body = &source[start..];
        let body = &body[..body.find("\n)").expect("end of NAMES")];
        let names: Vec<&str> = body
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| l.starts_with('"'))
            .map(|l| l.trim_end_matches(',').trim_matches('"'))
            .collect();
        assert!(names.len() >= 9, "{names:?}");
        let mut ours: Vec<&str> = SWITCHES.to_vec();
        let mut theirs = names.clone();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs);
    }

    fn rec(id: &str, outcome: Outcome) -> TestRecord {
        TestRecord {
            nodeid: id.into(),
            outcome,
            phase: "call".into(),
            duration: 0.0,
            exception: None,
            longrepr: String::new(),
        }
    }

    fn run(items: &[(&str, Outcome)]) -> BTreeMap<String, TestRecord> {
        items
            .iter()
            .map(|(id, o)| (id.to_string(), rec(id, *o)))
            .collect()
    }

    #[test]
    fn flaky_and_newly_failing_are_told_apart() {
        use Outcome::*;
        let first = run(&[
            ("a", Passed),
            ("b", Passed),
            ("flip", Passed),
            ("c", Failed),
            ("known", Passed),
            ("m.py::gone", Passed),
            ("lost", Passed),
        ]);
        let second = run(&[
            ("a", Passed),
            ("b", Passed),
            ("flip", Failed),
            ("c", Failed),
            ("known", Passed),
            ("m.py::gone", Passed),
            ("lost", Passed),
        ]);
        let mut asyncbis = run(&[
            ("a", Passed),
            ("b", Timeout),
            ("flip", Failed),
            ("c", Passed),
            ("known", Failed),
        ]);
        let mut collect = rec("m.py", Error);
        collect.phase = "collect".into();
        asyncbis.insert("m.py".into(), collect);
        let comparison = compare(&first, &second, &asyncbis, true, &["known".to_string()]);
        assert_eq!(comparison.flaky, vec!["flip", "known"]);
        let failing: Vec<(&str, Outcome, &str)> = comparison
            .newly_failing
            .iter()
            .map(|r| (r.nodeid.as_str(), r.outcome, r.phase.as_str()))
            .collect();
        assert_eq!(
            failing,
            vec![
                ("b", Timeout, "call"),
                ("lost", Hung, "call"),
                ("m.py::gone", Error, "collect")
            ]
        );
        assert_eq!(comparison.newly_passing, vec!["c"]);
    }

    #[test]
    fn flaky_includes_parametrised_variants_of_known_flaky() {
        use Outcome::*;
        let first = run(&[("t[1]", Passed)]);
        let asyncbis = run(&[("t[1]", Failed)]);
        let comparison = compare(&first, &first, &asyncbis, false, &["t".to_string()]);
        assert_eq!(comparison.flaky, vec!["t[1]"]);
        assert!(comparison.newly_failing.is_empty());
    }

    #[test]
    fn activation_is_proved_by_tasks_or_by_breakage() {
        use ActivationVerdict::*;
        assert_eq!(judge_activation(2, 10, 0), Activated);
        assert_eq!(judge_activation(1, 0, 0), NoTaskNoChange);
        assert_eq!(judge_activation(1, 0, 5), PatchedButNoTask);
        assert_eq!(judge_activation(0, 0, 5), HookNeverRan);
        assert_eq!(judge_activation(0, 0, 0), HookNeverRan);
    }

    #[test]
    fn attribution_decisions() {
        use Outcome::*;
        let with = |confirm, off: &[(&str, Outcome)], all_off| RerunOutcomes {
            confirm,
            switch_off: off.iter().map(|(s, o)| (s.to_string(), Some(*o))).collect(),
            all_off,
            only_on: BTreeMap::new(),
        };
        let single = attribute(&with(
            Some(Failed),
            &[("root-task-group", Passed), ("level-cancellation", Failed)],
            None,
        ));
        assert_eq!(single.verdict, Verdict::Switch);
        assert_eq!(single.fixed_by, vec!["root-task-group"]);
        let several = attribute(&with(
            Some(Failed),
            &[
                ("task-cancel-level", Passed),
                ("level-cancellation", Passed),
            ],
            None,
        ));
        assert_eq!(
            several.fixed_by,
            vec!["level-cancellation", "task-cancel-level"]
        );
        let combo = attribute(&with(
            Some(Failed),
            &[("root-task-group", Failed)],
            Some(Passed),
        ));
        assert_eq!(combo.verdict, Verdict::Combination);
        let none = attribute(&with(
            Some(Timeout),
            &[("root-task-group", Timeout)],
            Some(Failed),
        ));
        assert_eq!(none.verdict, Verdict::Unattributed);
        let missing = attribute(&with(Some(Failed), &[], None));
        assert_eq!(missing.verdict, Verdict::Unattributed);
        let flaky = attribute(&with(Some(Passed), &[("root-task-group", Passed)], None));
        assert_eq!(flaky.verdict, Verdict::NotReproducible);
        // Skipped when rerun is not a pass.
        let skipped = attribute(&with(Some(Failed), &[("root-task-group", Skipped)], None));
        assert_eq!(skipped.verdict, Verdict::Unattributed);

        let mut pending = BTreeMap::new();
        pending.insert(
            "x".to_string(),
            with(Some(Failed), &[("root-task-group", Failed)], None),
        );
        pending.insert(
            "y".to_string(),
            with(Some(Failed), &[("root-task-group", Passed)], None),
        );
        pending.insert("z".to_string(), with(Some(Passed), &[], None));
        assert_eq!(needs_all_off(&pending), vec!["x"]);
    }
}

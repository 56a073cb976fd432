//! Pure decisions: flaky tests, newly failing tests, and which switch a failure belongs to.

use crate::results::{Outcome, TestRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

// SWITCHES, SWITCH_DEFINITIONS, PROFILES and PROFILE_VALUES: the library's own list
// (python/asyncbis/switches.toml), compiled in by build.rs.
include!(concat!(env!("OUT_DIR"), "/switches.rs"));

/// The switch behind test-harness breakage (pytest-asyncio's event-loop-policy calls): the
/// attribution reruns try it first and settle the tests it fixes.
pub const HARNESS_SWITCH: &str = "no-loop-policies";

/// How one stock-vs-asyncbis comparison came out.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Outcome differed between the two stock runs, or listed as known flaky.
    pub flaky: Vec<String>,
    /// Passed in both stock runs, failed under asyncbis (its module failing to import
    /// included); with the asyncbis record.
    pub newly_failing: Vec<TestRecord>,
    /// Passed in both stock runs, never started under asyncbis (the session ended first): not
    /// a failure; the attribution reruns give each its own outcome in a fresh session.
    pub not_run: Vec<String>,
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
                match collect_errors.iter().find(|c| is_inside(id, &c.nodeid)) {
                    Some(collect_error) => {
                        let mut record = (*collect_error).clone();
                        record.nodeid = id.clone();
                        comparison.newly_failing.push(record);
                    }
                    None => comparison.not_run.push(id.clone()),
                }
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
pub fn is_inside(test_id: &str, collector_id: &str) -> bool {
    !collector_id.is_empty()
        && (test_id.starts_with(&format!("{collector_id}::"))
            || test_id.starts_with(&format!("{collector_id}/")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Turning one switch off (any of `fixed_by`) makes the test pass, possibly with switches
    /// that broke its harness held off (`held_off`).
    Switch,
    /// No single switch fixes it, all switches off does, and at least two switches break it
    /// each on its own (`involved`).
    Combination,
    /// Fails even with every switch off (asyncbis's own behaviour or bug), or no switch and no
    /// real combination of switches explains it.
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
    /// Switches held off while `fixed_by` was found: each broke the test before its body ran
    /// (a setup error turned into a failure of the test itself with the switch off), which
    /// hid the switch behind the test's own failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_off: Vec<String>,
    /// Switches whose one-switch-off probe passed once but not when made again (or whose
    /// test then passed with every switch on as well): a lucky pass, not a cause; never in
    /// `fixed_by`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intermittent: Vec<String>,
}

impl Attribution {
    /// Named a cause: a switch, or a real combination (two switches or more).
    pub fn is_attributed(&self) -> bool {
        match self.verdict {
            Verdict::Switch => !self.fixed_by.is_empty(),
            Verdict::Combination => self.involved.len() >= 2,
            Verdict::Unattributed | Verdict::NotReproducible => false,
        }
    }

    /// The verdict this attribution counts under by the current rule: a "combination" of fewer
    /// than two switches (older tools wrote them) or a "switch" naming none explains nothing
    /// and counts as unattributed, so a re-rendered old report counts as a new one would.
    pub fn counted_verdict(&self) -> Verdict {
        match self.verdict {
            Verdict::Switch | Verdict::Combination if !self.is_attributed() => {
                Verdict::Unattributed
            }
            verdict => verdict,
        }
    }
}

/// One test in one rerun: its outcome and the phase it failed in (`None`: it did not run).
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub outcome: Outcome,
    pub phase: String,
    /// Implied by a group of switches turned off together (see `probe_groups`), not probed alone.
    pub by_group: bool,
}

impl Probe {
    pub fn new(outcome: Outcome, phase: &str) -> Probe {
        Probe {
            outcome,
            phase: phase.to_string(),
            by_group: false,
        }
    }
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Passed
    }
    pub fn failed(&self) -> bool {
        self.outcome.is_failure()
    }
    /// How far the test got before failing: the session's start-up or collection, fixture
    /// setup, its body, teardown.
    fn phase_rank(&self) -> u8 {
        match self.phase.as_str() {
            "startup" => 0,
            "collect" => 1,
            "setup" => 2,
            "call" => 3,
            _ => 4,
        }
    }
}

fn passed(probe: &Option<Probe>) -> bool {
    probe.as_ref().is_some_and(Probe::passed)
}

/// One-switch-off probes of a test, each on top of the switches held off for it.
#[derive(Debug, Default, Clone)]
pub struct Round {
    pub held_off: Vec<String>,
    pub switch_off: BTreeMap<String, Option<Probe>>,
    /// When more than one switch's probe passed: each of those probes made again (see
    /// `Round::needs_repeat`), and the round's baseline made again (`baseline_again`).
    pub again: Option<Repeat>,
}

/// A round's passing probes made a second time, to tell a cause from a lucky pass.
#[derive(Debug, Default, Clone)]
pub struct Repeat {
    /// The round's baseline again: every switch on but the held-off ones.
    pub baseline_again: Option<Probe>,
    /// The one-switch-off probe again, for each switch whose first probe passed.
    pub switch_off: BTreeMap<String, Option<Probe>>,
}

impl Round {
    /// Switches whose first one-switch-off probe passed, in SWITCHES order.
    pub fn first_passes(&self) -> Vec<String> {
        SWITCHES
            .iter()
            .filter(|switch| self.switch_off.get(**switch).is_some_and(passed))
            .map(|switch| switch.to_string())
            .collect()
    }

    /// Several switches each fixing a test alone is what a lucky pass looks like (a race that
    /// went the other way once): their probes are made again, with the baseline. A single
    /// fixing switch is not repeated (see the README's attribution rules: it would double the
    /// cost of nearly every failure).
    pub fn needs_repeat(&self) -> bool {
        self.again.is_none() && self.first_passes().len() > 1
    }

    /// The switches that fix the test: every passing probe's switch, or after a repeat those
    /// whose probe passed both times, provided the baseline failed again.
    pub fn fixed_by(&self) -> Vec<String> {
        let first = self.first_passes();
        match &self.again {
            None => first,
            Some(again) if passed(&again.baseline_again) => Vec::new(),
            Some(again) => first
                .into_iter()
                .filter(|switch| again.switch_off.get(switch).is_some_and(passed))
                .collect(),
        }
    }

    /// Switches whose first probe passed but whose pass did not hold up when repeated.
    pub fn intermittent(&self) -> Vec<String> {
        let fixed = self.fixed_by();
        self.first_passes()
            .into_iter()
            .filter(|switch| !fixed.contains(switch))
            .collect()
    }
}

/// Rounds of probes per test at most: the first, then one per unmasked harness-breaking switch.
pub const MAX_ROUNDS: usize = 3;

/// Outcomes of one test across the attribution reruns.
#[derive(Debug, Clone)]
pub struct RerunOutcomes {
    /// Rerun alone with every switch on.
    pub confirm: Option<Probe>,
    /// One-switch-off probes; a later round holds off a switch that masked the test's failure.
    pub rounds: Vec<Round>,
    /// Rerun with all switches off (only asked when no single switch fixed it).
    pub all_off: Option<Probe>,
    /// For combinations: rerun with only this switch on, by switch name.
    pub only_on: BTreeMap<String, Option<Probe>>,
}

impl Default for RerunOutcomes {
    fn default() -> Self {
        RerunOutcomes {
            confirm: None,
            rounds: vec![Round::default()],
            all_off: None,
            only_on: BTreeMap::new(),
        }
    }
}

impl RerunOutcomes {
    /// The probe the current round is compared with: the confirm rerun, or the probe whose
    /// switch the round holds off.
    fn baseline(&self, round: usize) -> Option<&Probe> {
        if round == 0 {
            return self.confirm.as_ref();
        }
        let held = self.rounds[round].held_off.last()?;
        self.rounds[round - 1].switch_off.get(held)?.as_ref()
    }

    /// A switch whose probe in the current round got the test past the phase it failed in
    /// (a fixture-setup error became a failure of the test body): that switch broke the test's
    /// harness and hides its real failure; the next round holds it off.
    pub fn masking_switch(&self) -> Option<String> {
        let round = self.rounds.len() - 1;
        let baseline = self.baseline(round)?;
        if !baseline.failed() || baseline.phase_rank() > 2 {
            return None;
        }
        let current = &self.rounds[round];
        SWITCHES
            .iter()
            .find(|switch| {
                current.switch_off.get(**switch).is_some_and(|probe| {
                    probe.as_ref().is_some_and(|p| {
                        !p.by_group && p.failed() && p.phase_rank() > baseline.phase_rank()
                    })
                })
            })
            .map(|s| s.to_string())
    }

    /// Whether some round found switches that fix the test (after any repeat).
    pub fn fixed(&self) -> bool {
        self.rounds.iter().any(|round| !round.fixed_by().is_empty())
    }

    /// Whether the test's first round passed with every switch on when made again: a test
    /// that fails only sometimes with every switch on, not reproducible.
    fn baseline_passed_again(&self) -> bool {
        self.rounds.first().is_some_and(|round| {
            round
                .again
                .as_ref()
                .is_some_and(|again| passed(&again.baseline_again))
        })
    }

    /// Whether the test's failures cost the whole time limit (timeouts, hangs): its probes are
    /// made by groups of switches (see `probe_groups`).
    pub fn is_costly(&self) -> bool {
        let round = self.rounds.len() - 1;
        self.baseline(round).is_some_and(|p| p.outcome.is_costly())
    }
}

pub fn attribute(outcomes: &RerunOutcomes) -> Attribution {
    // Lucky passes are reported whatever the verdict.
    let intermittent: Vec<String> = outcomes
        .rounds
        .iter()
        .flat_map(Round::intermittent)
        .collect();
    let verdict = |verdict, fixed_by, involved, held_off| Attribution {
        verdict,
        fixed_by,
        involved,
        held_off,
        intermittent: intermittent.clone(),
    };
    if passed(&outcomes.confirm) || outcomes.baseline_passed_again() {
        return verdict(Verdict::NotReproducible, vec![], vec![], vec![]);
    }
    for round in &outcomes.rounds {
        let fixed_by = round.fixed_by();
        if !fixed_by.is_empty() {
            return verdict(Verdict::Switch, fixed_by, vec![], round.held_off.clone());
        }
    }
    if !passed(&outcomes.all_off) {
        return verdict(Verdict::Unattributed, vec![], vec![], vec![]);
    }
    // A switch is involved when, left on with every other switch off, the test still fails.
    let involved: Vec<String> = SWITCHES
        .iter()
        .filter(|switch| {
            outcomes
                .only_on
                .get(**switch)
                .is_some_and(|o| o.as_ref().is_some_and(Probe::failed))
        })
        .map(|switch| switch.to_string())
        .collect();
    // One switch breaking it alone, yet turning that switch off does not fix it: no switch
    // and no combination explains it. Honestly unattributed, not a "combination" of one.
    if involved.len() < 2 {
        return verdict(Verdict::Unattributed, vec![], vec![], vec![]);
    }
    verdict(Verdict::Combination, vec![], involved, vec![])
}

/// Node ids that need the "one switch on" reruns: those only all-switches-off fixes.
pub fn combinations(outcomes: &BTreeMap<String, RerunOutcomes>) -> Vec<String> {
    outcomes
        .iter()
        .filter(|(_, o)| {
            !passed(&o.confirm) && !o.fixed() && passed(&o.all_off) && o.only_on.is_empty()
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Node ids still needing the all-switches-off rerun: not reproducible ones and ones a single
/// switch already explains are settled.
pub fn needs_all_off(outcomes: &BTreeMap<String, RerunOutcomes>) -> Vec<String> {
    outcomes
        .iter()
        .filter(|(_, o)| {
            !passed(&o.confirm) && !o.baseline_passed_again() && !o.fixed() && o.all_off.is_none()
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// The switches tried for a test searched by groups: halves, then halves of those, down to
/// single switches. A group is probed with all its switches off at once; only groups whose
/// probe fixes the test are split further. Turning more switches off takes a test closer to stock,
/// so a group whose probe does not fix the test contains no switch that fixes it alone: a
/// test that hangs costs about one rerun per level (two to four), not one per switch (ten).
pub fn split_group(group: &[String]) -> Vec<Vec<String>> {
    if group.len() <= 1 {
        return Vec::new();
    }
    let middle = group.len().div_ceil(2);
    vec![group[..middle].to_vec(), group[middle..].to_vec()]
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
    /// No stats, but the run was killed (stall watchdog, cap) before its processes could
    /// write them at exit: the attribution reruns, whose sessions end, decide.
    KilledBeforeStats,
    /// The hook ran, no task was created and nothing changed: not a pass, an error.
    NoTaskNoChange,
}

pub fn judge_activation(
    processes: usize,
    tasks: u64,
    newly_failing: usize,
    killed: bool,
) -> ActivationVerdict {
    match (processes, tasks, newly_failing) {
        (0, _, changed) if killed && changed > 0 => ActivationVerdict::KilledBeforeStats,
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
    fn the_switch_list_is_the_library_one() {
        assert_eq!(SWITCHES.first(), Some(&"root-task-group"));
        assert!(SWITCHES.contains(&HARNESS_SWITCH));
        assert_eq!(
            PROFILES,
            ["seed", "recommended", "additive", "additive+timeouts"]
        );
        let words: BTreeMap<&str, &str> = PROFILE_VALUES.iter().copied().collect();
        assert_eq!(words["seed"], "every switch on");
        assert_eq!(
            words["recommended"],
            "no-loop-policies=deprecated, task-cancel-level=uncancel, root-task-group=unretrieved, the rest on"
        );
        assert_eq!(
            words["additive"],
            "level-cancellation on, every other switch off"
        );
        assert_eq!(
            words["additive+timeouts"],
            "level-cancellation and scoped-timeouts on, every other switch off"
        );
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
        let comparison = compare(&first, &second, &asyncbis, &["known".to_string()]);
        assert_eq!(comparison.flaky, vec!["flip", "known"]);
        let failing: Vec<(&str, Outcome, &str)> = comparison
            .newly_failing
            .iter()
            .map(|r| (r.nodeid.as_str(), r.outcome, r.phase.as_str()))
            .collect();
        assert_eq!(
            failing,
            vec![("b", Timeout, "call"), ("m.py::gone", Error, "collect")]
        );
        // Never started, and no collection error explains it: not run, not a failure.
        assert_eq!(comparison.not_run, vec!["lost"]);
        assert_eq!(comparison.newly_passing, vec!["c"]);
    }

    #[test]
    fn flaky_includes_parametrised_variants_of_known_flaky() {
        use Outcome::*;
        let first = run(&[("t[1]", Passed)]);
        let asyncbis = run(&[("t[1]", Failed)]);
        let comparison = compare(&first, &first, &asyncbis, &["t".to_string()]);
        assert_eq!(comparison.flaky, vec!["t[1]"]);
        assert!(comparison.newly_failing.is_empty());
    }

    #[test]
    fn activation_is_proved_by_tasks_or_by_breakage() {
        use ActivationVerdict::*;
        assert_eq!(judge_activation(2, 10, 0, false), Activated);
        assert_eq!(judge_activation(1, 0, 0, false), NoTaskNoChange);
        assert_eq!(judge_activation(1, 0, 5, false), PatchedButNoTask);
        assert_eq!(judge_activation(0, 0, 5, false), HookNeverRan);
        assert_eq!(judge_activation(0, 0, 0, false), HookNeverRan);
        // Killed before exit handlers could write stats: the reruns decide.
        assert_eq!(judge_activation(0, 0, 5, true), KilledBeforeStats);
        assert_eq!(judge_activation(0, 0, 0, true), HookNeverRan);
        assert_eq!(judge_activation(1, 3, 5, true), Activated);
    }

    fn probe(outcome: Outcome, phase: &str) -> Option<Probe> {
        Some(Probe::new(outcome, phase))
    }

    fn with(
        confirm: Option<Outcome>,
        off: &[(&str, Outcome)],
        all_off: Option<Outcome>,
    ) -> RerunOutcomes {
        RerunOutcomes {
            confirm: confirm.and_then(|o| probe(o, "call")),
            rounds: vec![Round {
                held_off: vec![],
                switch_off: off
                    .iter()
                    .map(|(s, o)| (s.to_string(), probe(*o, "call")))
                    .collect(),
                again: None,
            }],
            all_off: all_off.and_then(|o| probe(o, "call")),
            only_on: BTreeMap::new(),
        }
    }

    #[test]
    fn attribution_decisions() {
        use Outcome::*;
        let single = attribute(&with(
            Some(Failed),
            &[("root-task-group", Passed), ("level-cancellation", Failed)],
            None,
        ));
        assert_eq!(single.verdict, Verdict::Switch);
        assert_eq!(single.fixed_by, vec!["root-task-group"]);
        assert!(single.is_attributed() && single.held_off.is_empty());
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
        let none = attribute(&with(
            Some(Timeout),
            &[("root-task-group", Timeout)],
            Some(Failed),
        ));
        assert_eq!(none.verdict, Verdict::Unattributed);
        assert!(!none.is_attributed());
        let missing = attribute(&with(Some(Failed), &[], None));
        assert_eq!(missing.verdict, Verdict::Unattributed);
        let flaky = attribute(&with(Some(Passed), &[("root-task-group", Passed)], None));
        assert_eq!(flaky.verdict, Verdict::NotReproducible);
        // Skipped when rerun is not a pass; not run is not a pass either.
        let skipped = attribute(&with(Some(Failed), &[("root-task-group", Skipped)], None));
        assert_eq!(skipped.verdict, Verdict::Unattributed);
        let mut unrun = with(Some(Failed), &[], None);
        unrun.rounds[0]
            .switch_off
            .insert("root-task-group".into(), None);
        assert_eq!(attribute(&unrun).verdict, Verdict::Unattributed);

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
        pending.insert(
            "done".to_string(),
            with(Some(Failed), &[("root-task-group", Failed)], Some(Failed)),
        );
        assert_eq!(needs_all_off(&pending), vec!["x"]);
    }

    fn repeat(baseline: Outcome, off: &[(&str, Option<Outcome>)]) -> Repeat {
        Repeat {
            baseline_again: probe(baseline, "call"),
            switch_off: off
                .iter()
                .map(|(s, o)| (s.to_string(), o.and_then(|o| probe(o, "call"))))
                .collect(),
        }
    }

    #[test]
    fn several_fixing_switches_are_repeated_and_lucky_passes_left_out() {
        use Outcome::*;
        // aiologic's test_current_green_library_failsafe: sniffio-name breaks it; the probes
        // with level-cancellation and structured-exit off passed by winning a race once.
        let three = [
            ("level-cancellation", Passed),
            ("structured-exit", Passed),
            ("sniffio-name", Passed),
            ("root-task-group", Failed),
        ];
        let mut o = with(Some(Failed), &three, None);
        assert!(o.rounds[0].needs_repeat());
        // Before the repeat, all three (what the tool used to report).
        assert_eq!(attribute(&o).fixed_by.len(), 3);
        o.rounds[0].again = Some(repeat(
            Failed,
            &[
                ("level-cancellation", Some(Failed)),
                ("structured-exit", Some(Timeout)),
                ("sniffio-name", Some(Passed)),
            ],
        ));
        assert!(!o.rounds[0].needs_repeat(), "repeated once, not again");
        let found = attribute(&o);
        assert_eq!(found.verdict, Verdict::Switch);
        assert_eq!(found.fixed_by, vec!["sniffio-name"]);
        assert_eq!(
            found.intermittent,
            vec!["level-cancellation", "structured-exit"]
        );
        assert!(found.is_attributed() && o.fixed());
        let pending: BTreeMap<String, RerunOutcomes> = [("t".to_string(), o.clone())].into();
        assert!(needs_all_off(&pending).is_empty());

        // Two switches that both hold up: both named, nothing intermittent.
        let mut both = with(
            Some(Failed),
            &[
                ("task-cancel-level", Passed),
                ("level-cancellation", Passed),
            ],
            None,
        );
        both.rounds[0].again = Some(repeat(
            Failed,
            &[
                ("task-cancel-level", Some(Passed)),
                ("level-cancellation", Some(Passed)),
            ],
        ));
        let held = attribute(&both);
        assert_eq!(
            held.fixed_by,
            vec!["level-cancellation", "task-cancel-level"]
        );
        assert!(held.intermittent.is_empty());

        // A single fixing switch is not repeated (cost: nearly every failure has one).
        let single = with(
            Some(Failed),
            &[("sniffio-name", Passed), ("root-task-group", Failed)],
            None,
        );
        assert!(!single.rounds[0].needs_repeat());
        assert_eq!(attribute(&single).fixed_by, vec!["sniffio-name"]);
        assert!(attribute(&single).intermittent.is_empty());
    }

    #[test]
    fn when_no_pass_holds_up_the_other_rules_decide() {
        use Outcome::*;
        let two = [("level-cancellation", Passed), ("structured-exit", Passed)];
        // Neither repeat passes (one did not even run: not a pass): no switch fixes it, so it
        // needs the all-switches-off rerun like any test no switch fixes.
        let mut o = with(Some(Failed), &two, None);
        o.rounds[0].again = Some(repeat(
            Failed,
            &[
                ("level-cancellation", Some(Failed)),
                ("structured-exit", None),
            ],
        ));
        assert!(!o.fixed());
        let pending: BTreeMap<String, RerunOutcomes> = [("t".to_string(), o.clone())].into();
        assert_eq!(needs_all_off(&pending), vec!["t"]);
        o.all_off = probe(Failed, "call");
        let none = attribute(&o);
        assert_eq!(none.verdict, Verdict::Unattributed);
        assert!(none.fixed_by.is_empty() && !none.is_attributed());
        assert_eq!(
            none.intermittent,
            vec!["level-cancellation", "structured-exit"]
        );
        // All off passes: the combination reruns decide, as for any test.
        o.all_off = probe(Passed, "call");
        let pending: BTreeMap<String, RerunOutcomes> = [("t".to_string(), o.clone())].into();
        assert_eq!(combinations(&pending), vec!["t"]);
        o.only_on = [
            ("level-cancellation".to_string(), probe(Failed, "call")),
            ("structured-exit".to_string(), probe(Failed, "call")),
        ]
        .into();
        let combo = attribute(&o);
        assert_eq!(combo.verdict, Verdict::Combination);
        assert_eq!(
            combo.intermittent,
            vec!["level-cancellation", "structured-exit"]
        );

        // Every switch on, the test passed when made again: it fails only sometimes, and
        // none of the passes can be told from luck. Not reproducible, no further reruns.
        let mut flaky = with(Some(Failed), &two, None);
        flaky.rounds[0].again = Some(repeat(
            Passed,
            &[
                ("level-cancellation", Some(Passed)),
                ("structured-exit", Some(Passed)),
            ],
        ));
        let verdict = attribute(&flaky);
        assert_eq!(verdict.verdict, Verdict::NotReproducible);
        assert!(verdict.fixed_by.is_empty());
        assert_eq!(
            verdict.intermittent,
            vec!["level-cancellation", "structured-exit"]
        );
        let pending: BTreeMap<String, RerunOutcomes> = [("t".to_string(), flaky)].into();
        assert!(needs_all_off(&pending).is_empty());

        // Behind a held-off switch, the baseline passing again is not "passes with every
        // switch on": the round's passes are intermittent and the test goes on to all-off.
        let mut behind = RerunOutcomes {
            confirm: probe(Error, "setup"),
            ..Default::default()
        };
        behind.rounds[0]
            .switch_off
            .insert("no-loop-policies".into(), probe(Failed, "call"));
        behind.rounds.push(Round {
            held_off: vec!["no-loop-policies".into()],
            switch_off: two
                .iter()
                .map(|(s, o)| (s.to_string(), probe(*o, "call")))
                .collect(),
            again: Some(repeat(
                Passed,
                &[
                    ("level-cancellation", Some(Passed)),
                    ("structured-exit", Some(Passed)),
                ],
            )),
        });
        assert!(!behind.fixed());
        let pending: BTreeMap<String, RerunOutcomes> = [("t".to_string(), behind)].into();
        assert_eq!(needs_all_off(&pending), vec!["t"]);
    }

    #[test]
    fn a_combination_needs_two_switches_or_it_is_unattributed() {
        use Outcome::*;
        let mut combo = with(Some(Failed), &[("root-task-group", Failed)], Some(Passed));
        let pending: BTreeMap<String, RerunOutcomes> = [("c".to_string(), combo.clone())].into();
        assert_eq!(combinations(&pending), vec!["c"]);
        combo.only_on = [
            ("root-task-group".to_string(), probe(Failed, "call")),
            ("no-loop-policies".to_string(), probe(Error, "setup")),
            ("inline-shield".to_string(), probe(Passed, "call")),
            ("structured-exit".to_string(), None),
        ]
        .into();
        let real = attribute(&combo);
        assert_eq!(real.verdict, Verdict::Combination);
        assert_eq!(real.involved, vec!["root-task-group", "no-loop-policies"]);
        assert!(real.is_attributed());
        // Probed already: not asked again.
        let probed: BTreeMap<String, RerunOutcomes> = [("c".to_string(), combo.clone())].into();
        assert!(combinations(&probed).is_empty());
        // Only the harness switch breaks it alone, and turning it off does not fix it: the old
        // "combination(no-loop-policies)" is no category.
        combo
            .only_on
            .insert("root-task-group".into(), probe(Passed, "call"));
        let lone = attribute(&combo);
        assert_eq!(lone.verdict, Verdict::Unattributed);
        assert!(lone.involved.is_empty() && !lone.is_attributed());
    }

    #[test]
    fn a_switch_that_breaks_the_harness_is_held_off_and_the_real_switch_named() {
        use Outcome::*;
        // Every switch on: pytest-asyncio's fixture errors in setup. With no-loop-policies off
        // the test gets to its body and fails there: that switch masks the real cause.
        let mut o = RerunOutcomes {
            confirm: probe(Error, "setup"),
            ..Default::default()
        };
        o.rounds[0]
            .switch_off
            .insert("no-loop-policies".into(), probe(Failed, "call"));
        assert_eq!(o.masking_switch().as_deref(), Some("no-loop-policies"));
        assert!(!o.fixed() && !o.is_costly());
        o.rounds.push(Round {
            held_off: vec!["no-loop-policies".into()],
            switch_off: [
                ("task-cancel-level".to_string(), probe(Passed, "call")),
                ("root-task-group".to_string(), probe(Failed, "call")),
            ]
            .into(),
            again: None,
        });
        let found = attribute(&o);
        assert_eq!(found.verdict, Verdict::Switch);
        assert_eq!(found.fixed_by, vec!["task-cancel-level"]);
        assert_eq!(found.held_off, vec!["no-loop-policies"]);
        assert!(found.is_attributed());
        // The next round's baseline is the masking probe: nothing masks further.
        assert_eq!(o.masking_switch(), None);

        // Any switch, not just the harness one; a probe still failing in setup, or failing
        // later only as implied by a group of switches, masks nothing.
        let mut other = RerunOutcomes {
            confirm: probe(Error, "setup"),
            ..Default::default()
        };
        other.rounds[0].switch_off = [
            ("root-task-group".to_string(), probe(Error, "setup")),
            (
                "inline-shield".to_string(),
                Some(Probe {
                    by_group: true,
                    ..Probe::new(Failed, "call")
                }),
            ),
            ("sniffio-name".to_string(), probe(Failed, "teardown")),
        ]
        .into();
        assert_eq!(other.masking_switch().as_deref(), Some("sniffio-name"));
        // A test failing in its body already is not masked by a switch making it fail later.
        let body = RerunOutcomes {
            confirm: probe(Failed, "call"),
            rounds: vec![Round {
                held_off: vec![],
                switch_off: [("sniffio-name".to_string(), probe(Failed, "teardown"))].into(),
                again: None,
            }],
            ..Default::default()
        };
        assert_eq!(body.masking_switch(), None);
    }

    #[test]
    fn a_session_that_cannot_start_is_breakage_attributed_like_any_failure() {
        use Outcome::*;
        assert!(NotStarted.is_failure() && !NotStarted.is_costly());
        // The session dies at start-up with every switch on (a conftest raising on import);
        // with no-loop-policies off it starts and the test passes: that switch.
        let mut fixed = RerunOutcomes {
            confirm: probe(NotStarted, "startup"),
            ..Default::default()
        };
        fixed.rounds[0].switch_off = [
            ("root-task-group".to_string(), probe(NotStarted, "startup")),
            ("no-loop-policies".to_string(), probe(Passed, "call")),
        ]
        .into();
        assert_eq!(fixed.masking_switch(), None);
        let verdict = attribute(&fixed);
        assert_eq!(verdict.verdict, Verdict::Switch);
        assert_eq!(verdict.fixed_by, vec!["no-loop-policies"]);
        assert!(verdict.is_attributed() && verdict.held_off.is_empty());
        // Started with the switch off, the test fails later (its module's import, its setup,
        // its body): the start-up switch masks its own failure and is held off, as a broken
        // harness is.
        for phase in ["collect", "setup", "call"] {
            let mut masked = RerunOutcomes {
                confirm: probe(NotStarted, "startup"),
                ..Default::default()
            };
            masked.rounds[0]
                .switch_off
                .insert("no-loop-policies".into(), probe(Failed, phase));
            assert_eq!(
                masked.masking_switch().as_deref(),
                Some("no-loop-policies"),
                "{phase}"
            );
        }
        // No switch lets it start: unattributed, still a failure.
        let mut stuck = RerunOutcomes {
            confirm: probe(NotStarted, "startup"),
            all_off: probe(NotStarted, "startup"),
            ..Default::default()
        };
        stuck.rounds[0]
            .switch_off
            .insert("no-loop-policies".into(), probe(NotStarted, "startup"));
        assert_eq!(attribute(&stuck).verdict, Verdict::Unattributed);
    }

    #[test]
    fn timing_out_tests_are_probed_by_halving_groups_of_switches() {
        let names: Vec<String> = SWITCHES.iter().map(|s| s.to_string()).collect();
        let halves = split_group(&names);
        assert_eq!(halves.len(), 2);
        assert_eq!(halves[0].len() + halves[1].len(), names.len());
        assert_eq!([halves[0].clone(), halves[1].clone()].concat(), names);
        // Down to single switches, in at most ceil(log2(n)) levels.
        let mut level = vec![names.clone()];
        let mut depth = 0;
        while level.iter().any(|g| g.len() > 1) {
            level = level
                .iter()
                .flat_map(|g| match split_group(g) {
                    halves if halves.is_empty() => vec![g.clone()],
                    halves => halves,
                })
                .collect();
            depth += 1;
        }
        assert_eq!(level.len(), names.len());
        assert!(depth <= 4, "{depth}");
        assert!(split_group(&names[..1]).is_empty());
        let costly = RerunOutcomes {
            confirm: probe(Outcome::Timeout, "call"),
            ..Default::default()
        };
        assert!(costly.is_costly());
    }
}

//! Test outcomes of one suite run, read from the recorder plugin's JSON lines or from JUnit XML.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Passed,
    Skipped,
    Failed,
    /// Failed in setup/teardown or at collection.
    Error,
    /// Stopped by the per-test timeout (pytest-timeout).
    Timeout,
    /// Started but never finished: the session was killed (its wall-clock cap or the stall
    /// watchdog; the record's exception says which).
    Hung,
    /// Started but never finished: the pytest session ended by itself while it ran (an
    /// INTERNALERROR, the process exiting).
    Crashed,
    /// Never started, not even alone in a fresh session: the session failed at start-up (a
    /// conftest raising on import, an INTERNALERROR before the first test, a hang while
    /// collecting). Breakage, with the session's error as its exception.
    NotStarted,
}

impl Outcome {
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Failed
                | Outcome::Error
                | Outcome::Timeout
                | Outcome::Hung
                | Outcome::Crashed
                | Outcome::NotStarted
        )
    }
    /// Failures that cost a rerun its whole time limit (the per-test timeout, the stall watchdog).
    pub fn is_costly(self) -> bool {
        matches!(self, Outcome::Timeout | Outcome::Hung)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Hung => "hung",
            Outcome::Crashed => "crashed",
            Outcome::NotStarted => "not-started",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub file: String,
    pub line: u32,
    pub function: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExceptionInfo {
    pub exc_type: String,
    pub message: String,
    /// Outermost first; the last frame raised the exception.
    pub frames: Vec<Frame>,
    /// Set when the exception reached pytest wrapped in an exception group (its type).
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRecord {
    pub nodeid: String,
    pub outcome: Outcome,
    /// setup / call / teardown / collect: where the failure happened.
    pub phase: String,
    pub duration: f64,
    pub exception: Option<ExceptionInfo>,
    /// pytest's rendering of the failure (truncated), for sample tracebacks.
    pub longrepr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub skipped: usize,
    pub timeouts: usize,
    pub hung: usize,
    #[serde(default)]
    pub crashed: usize,
    #[serde(default)]
    pub not_started: usize,
}

impl Counts {
    pub fn of(tests: &BTreeMap<String, TestRecord>) -> Counts {
        let mut counts = Counts::default();
        for record in tests.values() {
            match record.outcome {
                Outcome::Passed => counts.passed += 1,
                Outcome::Failed => counts.failed += 1,
                Outcome::Error => counts.errors += 1,
                Outcome::Skipped => counts.skipped += 1,
                Outcome::Timeout => counts.timeouts += 1,
                Outcome::Hung => counts.hung += 1,
                Outcome::Crashed => counts.crashed += 1,
                Outcome::NotStarted => counts.not_started += 1,
            }
        }
        counts
    }
    pub fn total(&self) -> usize {
        self.passed + self.failing() + self.errors + self.skipped
    }
    /// Failed in their call, timed out, hung, crashed or never started (errors are counted
    /// apart).
    pub fn failing(&self) -> usize {
        self.failed + self.timeouts + self.hung + self.crashed + self.not_started
    }
}

/// What the recorder saw: tests by node id and pytest's exit status (if it got to finish).
#[derive(Debug, Default)]
pub struct Recorded {
    pub tests: BTreeMap<String, TestRecord>,
    pub exit_status: Option<i32>,
    /// Tests that started and never reported their teardown, with the phase they were in.
    pub unfinished: BTreeMap<String, String>,
}

/// How a pytest session ended, which says what happened to a test it left unfinished.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Killed at the suite's wall-clock cap (seconds).
    Cap(u64),
    /// Killed by the stall watchdog: nothing recorded for this many seconds.
    Stalled(u64),
    /// The session ended by itself: exit status, and the error it printed (INTERNALERROR ...).
    Exited(Option<i32>, Option<String>),
}

impl Ending {
    /// Why tests this session never started did not run.
    pub fn not_run_reason(&self) -> String {
        match self {
            Ending::Cap(seconds) => {
                format!("the suite was killed at its wall-clock cap ({seconds} s) before this test ran")
            }
            Ending::Stalled(seconds) => format!(
                "the stall watchdog killed the session (nothing recorded for {seconds} s) before this test ran"
            ),
            Ending::Exited(status, error) => format!(
                "the pytest session ended (exit status {}) before this test ran{}",
                status.map_or("none".to_string(), |s| s.to_string()),
                error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
        }
    }

    /// The record of a test that never started, not even alone in a fresh session: its session
    /// failed at start-up, before any test (a conftest raising on import, an INTERNALERROR, a
    /// hang while collecting). The exception is the session's error (`Type: message`) with the
    /// frames of the traceback it printed (`output`; relative paths are under `tree`), so the
    /// signature names what broke the start-up.
    pub fn not_started(&self, nodeid: &str, output: &str, tree: &str) -> TestRecord {
        let (exc_type, message) = match self {
            Ending::Cap(seconds) => (
                "SuiteCap".to_string(),
                format!("the suite's wall-clock cap ({seconds} s) was reached before any test started"),
            ),
            Ending::Stalled(seconds) => (
                "Stalled".to_string(),
                format!("the stall watchdog killed the session before any test started (nothing recorded for {seconds} s)"),
            ),
            Ending::Exited(_, Some(error)) => split_error(error),
            Ending::Exited(status, None) => (
                "SessionStartup".to_string(),
                format!(
                    "the pytest session ended (exit status {}) before any test started",
                    status.map_or("none".to_string(), |s| s.to_string())
                ),
            ),
        };
        let status = match self {
            Ending::Exited(status, _) => format!(
                " (exit status {})",
                status.map_or("none".to_string(), |s| s.to_string())
            ),
            _ => String::new(),
        };
        TestRecord {
            nodeid: nodeid.to_string(),
            outcome: Outcome::NotStarted,
            phase: "startup".to_string(),
            duration: 0.0,
            longrepr: truncate_tail(
                &format!(
                    "session start-up failed{status}: this test never started, not even alone in a fresh session\n{exc_type}: {message}\n\n{output}"
                ),
                6000,
            ),
            exception: Some(ExceptionInfo {
                exc_type,
                message,
                frames: traceback_frames(output, tree),
                group: None,
            }),
        }
    }
}

/// `pkg.SomeError: message` into its type and message; anything else is the message of a
/// `SessionStartup` error.
fn split_error(error: &str) -> (String, String) {
    let error = error.trim();
    if let Some((head, message)) = error.split_once(": ") {
        // A (dotted) class name: `usage: pytest ...` is not one.
        let is_type = head
            .rsplit('.')
            .next()
            .is_some_and(|name| name.starts_with(|c: char| c.is_ascii_uppercase()))
            && head
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'));
        if is_type {
            return (head.to_string(), message.to_string());
        }
    }
    ("SessionStartup".to_string(), error.to_string())
}

/// The frames of the last traceback in a session's output, outermost first: pytest's short
/// style (`path:12: in func`, as for a conftest that fails to import) or Python's
/// (`File "path", line 12, in func`, as after `INTERNALERROR>`).
fn traceback_frames(output: &str, tree: &str) -> Vec<Frame> {
    static PATTERNS: std::sync::OnceLock<[regex::Regex; 2]> = std::sync::OnceLock::new();
    let [short, long] = PATTERNS.get_or_init(|| {
        [
            regex::Regex::new(r"^(\S+\.py):(\d+): in (\S+)$").expect("static regex"),
            regex::Regex::new(r#"^\s*File "([^"]+)", line (\d+), in (\S+)$"#)
                .expect("static regex"),
        ]
    });
    let mut frames = Vec::new();
    for line in output.lines() {
        let line = line
            .strip_prefix("INTERNALERROR>")
            .unwrap_or(line)
            .trim_end();
        if line
            .trim_start()
            .starts_with("Traceback (most recent call last)")
        {
            frames.clear();
        }
        let Some(found) = short.captures(line).or_else(|| long.captures(line)) else {
            continue;
        };
        let file = &found[1];
        let file = if file.starts_with('/') || tree.is_empty() {
            file.to_string()
        } else {
            format!("{}/{file}", tree.trim_end_matches('/'))
        };
        frames.push(Frame {
            file,
            line: found[2].parse().unwrap_or(0),
            function: found[3].to_string(),
        });
    }
    frames
}

impl Recorded {
    /// Gives each unfinished test the outcome its session's ending implies: `Hung` when the
    /// session was killed (at the cap or by the stall watchdog, said in its exception), `Crashed`
    /// when pytest ended by itself while the test ran. A failure reported before the session
    /// ended is kept. `output` (the session's last output) stands for its traceback.
    pub fn label_unfinished(&mut self, ending: &Ending, output: &str) {
        for (id, phase) in &self.unfinished {
            let Some(record) = self.tests.get_mut(id) else {
                continue;
            };
            if !matches!(record.outcome, Outcome::Hung | Outcome::Passed) {
                continue;
            }
            let (outcome, exc_type, message) = match ending {
                Ending::Cap(seconds) => (
                    Outcome::Hung,
                    "SuiteCap",
                    format!("the suite's wall-clock cap ({seconds} s) was reached while this test ran ({phase})"),
                ),
                Ending::Stalled(seconds) => (
                    Outcome::Hung,
                    "Stalled",
                    format!("the stall watchdog killed the session: nothing recorded for {seconds} s while this test ran ({phase})"),
                ),
                Ending::Exited(status, error) => (
                    Outcome::Crashed,
                    "SessionEnded",
                    format!(
                        "the pytest session ended (exit status {}) while this test ran ({phase}){}",
                        status.map_or("none".to_string(), |s| s.to_string()),
                        error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                ),
            };
            record.outcome = outcome;
            record.phase = phase.clone();
            if record.longrepr.is_empty() {
                record.longrepr = truncate_tail(&format!("{message}\n\n{output}"), 6000);
            }
            record.exception = Some(ExceptionInfo {
                exc_type: exc_type.to_string(),
                message,
                frames: Vec::new(),
                group: None,
            });
        }
    }
}

#[derive(Deserialize)]
struct RawEvent {
    event: String,
    #[serde(default)]
    nodeid: String,
    #[serde(default)]
    when: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    duration: f64,
    #[serde(default)]
    longrepr: String,
    #[serde(default)]
    exc: Option<RawExc>,
    #[serde(default)]
    exitstatus: Option<i32>,
}

#[derive(Deserialize)]
struct RawExc {
    #[serde(rename = "type")]
    exc_type: String,
    message: String,
    frames: Vec<(String, u32, String)>,
    group: Option<RawGroup>,
}

#[derive(Deserialize)]
struct RawGroup {
    #[serde(rename = "type")]
    group_type: String,
}

fn is_pytest_timeout(longrepr: &str, exc: &Option<ExceptionInfo>) -> bool {
    let message = exc.as_ref().map(|e| e.message.as_str()).unwrap_or("");
    message.contains("Timeout (>")
        || longrepr.contains("Timeout (>") && longrepr.contains("pytest-timeout")
}

fn truncate_tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// Parses the recorder's JSON lines. Unparseable lines (a process killed mid-write) are skipped.
pub fn parse_recorder(text: &str) -> Recorded {
    let mut recorded = Recorded::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<RawEvent>(line) else {
            continue;
        };
        match event.event.as_str() {
            "start" => {
                recorded
                    .tests
                    .entry(event.nodeid.clone())
                    .or_insert_with(|| TestRecord {
                        nodeid: event.nodeid.clone(),
                        outcome: Outcome::Hung,
                        phase: "call".into(),
                        duration: 0.0,
                        exception: None,
                        longrepr: String::new(),
                    });
                recorded.unfinished.insert(event.nodeid, "setup".into());
            }
            "collect" => {
                recorded.tests.insert(
                    event.nodeid.clone(),
                    TestRecord {
                        nodeid: event.nodeid,
                        outcome: Outcome::Error,
                        phase: "collect".into(),
                        duration: 0.0,
                        exception: exception_from_longrepr(&event.longrepr),
                        longrepr: truncate_tail(&event.longrepr, 6000),
                    },
                );
            }
            "phase" => {
                match event.when.as_str() {
                    "teardown" => {
                        recorded.unfinished.remove(&event.nodeid);
                    }
                    when => {
                        let next = if when == "setup" { "call" } else { "teardown" };
                        if let Some(phase) = recorded.unfinished.get_mut(&event.nodeid) {
                            *phase = next.to_string();
                        }
                    }
                }
                apply_phase(&mut recorded.tests, event)
            }
            "finish" => recorded.exit_status = event.exitstatus,
            _ => {}
        }
    }
    recorded
}

fn apply_phase(tests: &mut BTreeMap<String, TestRecord>, event: RawEvent) {
    let record = tests
        .entry(event.nodeid.clone())
        .or_insert_with(|| TestRecord {
            nodeid: event.nodeid.clone(),
            outcome: Outcome::Hung,
            phase: event.when.clone(),
            duration: 0.0,
            exception: None,
            longrepr: String::new(),
        });
    record.duration += event.duration;
    let exception = event.exc.map(|raw| ExceptionInfo {
        exc_type: raw.exc_type,
        message: raw.message,
        frames: raw
            .frames
            .into_iter()
            .map(|(file, line, function)| Frame {
                file,
                line,
                function,
            })
            .collect(),
        group: raw.group.map(|g| g.group_type),
    });
    let exception = exception.or_else(|| {
        (event.outcome == "failed")
            .then(|| exception_from_longrepr(&event.longrepr))
            .flatten()
    });
    let failed_outcome = |when: &str| {
        if is_pytest_timeout(&event.longrepr, &exception) {
            Outcome::Timeout
        } else if when == "call" {
            Outcome::Failed
        } else {
            Outcome::Error
        }
    };
    let earlier_failure = record.outcome.is_failure() && record.outcome != Outcome::Hung;
    match (event.when.as_str(), event.outcome.as_str()) {
        (_, "failed") if !earlier_failure => {
            record.outcome = failed_outcome(&event.when);
            record.phase = event.when.clone();
            record.exception = exception;
            record.longrepr = truncate_tail(&event.longrepr, 6000);
        }
        ("setup" | "call", "skipped") => {
            record.outcome = Outcome::Skipped;
            record.phase = event.when.clone();
        }
        ("call", "passed") => record.outcome = Outcome::Passed,
        // A test that only ran setup and teardown (e.g. skipped by a fixture) keeps that outcome.
        ("teardown", "passed") if record.outcome == Outcome::Hung => {
            record.outcome = Outcome::Passed
        }
        _ => {}
    }
}

/// Best-effort exception type and message from pytest's text rendering (`E   Type: message`).
pub fn exception_from_longrepr(longrepr: &str) -> Option<ExceptionInfo> {
    let line = longrepr
        .lines()
        .rev()
        .find(|line| line.starts_with("E ") && line.contains(':'))
        .or_else(|| longrepr.lines().rev().find(|line| line.starts_with("E ")))?;
    let body = line.trim_start_matches('E').trim();
    let (exc_type, message) = match body.split_once(':') {
        Some((head, rest)) if is_dotted_identifier(head) => {
            (head.to_string(), rest.trim().to_string())
        }
        _ => (
            body.split_whitespace().next().unwrap_or("").to_string(),
            body.to_string(),
        ),
    };
    let frames = longrepr.lines().filter_map(parse_location_line).collect();
    Some(ExceptionInfo {
        exc_type,
        message,
        frames,
        group: None,
    })
}

fn is_dotted_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_alphanumeric() || c == '_'))
}

/// pytest's long/short tracebacks locate entries as `path:line: ...`.
fn parse_location_line(line: &str) -> Option<Frame> {
    let mut parts = line.splitn(3, ':');
    let file = parts.next()?;
    let lineno = parts.next()?.trim().parse::<u32>().ok()?;
    let rest = parts.next()?.trim();
    if !file.ends_with(".py") || file.contains(' ') {
        return None;
    }
    let function = rest.strip_prefix("in ").unwrap_or("").to_string();
    Some(Frame {
        file: file.to_string(),
        line: lineno,
        function,
    })
}

/// Parses pytest JUnit XML (xunit1 gives `file`, which makes exact node ids possible).
pub fn parse_junit(xml: &str) -> Result<BTreeMap<String, TestRecord>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut tests = BTreeMap::new();
    let mut current: Option<TestRecord> = None;
    let mut in_detail = false;
    loop {
        let event = reader.read_event().map_err(|err| {
            format!(
                "invalid JUnit XML at byte {}: {err}",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::Start(ref element) | Event::Empty(ref element) => {
                let is_empty = matches!(event, Event::Empty(_));
                let attrs = attributes(element)?;
                match element.name().as_ref() {
                    b"testcase" => {
                        let record = TestRecord {
                            nodeid: junit_nodeid(&attrs),
                            outcome: Outcome::Passed,
                            phase: "call".into(),
                            duration: attrs
                                .get("time")
                                .and_then(|t| t.parse().ok())
                                .unwrap_or(0.0),
                            exception: None,
                            longrepr: String::new(),
                        };
                        if is_empty {
                            tests.insert(record.nodeid.clone(), record);
                        } else {
                            current = Some(record);
                        }
                    }
                    tag @ (b"failure" | b"error" | b"skipped") => {
                        if let Some(record) = current.as_mut() {
                            let message = attrs.get("message").cloned().unwrap_or_default();
                            let outcome = match tag {
                                b"skipped" => Outcome::Skipped,
                                b"failure" if message.contains("Timeout (>") => Outcome::Timeout,
                                b"failure" => Outcome::Failed,
                                _ => Outcome::Error,
                            };
                            // A call failure outranks a teardown error on the same test.
                            if !record.outcome.is_failure() {
                                record.outcome = outcome;
                                if outcome == Outcome::Error {
                                    record.phase = "setup".into();
                                }
                                if outcome.is_failure() {
                                    record.exception = Some(exception_from_message(&message));
                                }
                            }
                            in_detail = !is_empty && outcome.is_failure();
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(text) if in_detail => {
                if let Some(record) = current.as_mut() {
                    let text = text
                        .unescape()
                        .map_err(|err| format!("invalid JUnit XML text: {err}"))?;
                    record.longrepr.push_str(&text);
                }
            }
            Event::CData(data) if in_detail => {
                if let Some(record) = current.as_mut() {
                    record.longrepr.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::End(element) => match element.name().as_ref() {
                b"testcase" => {
                    if let Some(mut record) = current.take() {
                        if let Some(exc) = record.exception.as_mut() {
                            exc.frames = record
                                .longrepr
                                .lines()
                                .filter_map(parse_location_line)
                                .collect();
                        }
                        record.longrepr = truncate_tail(&record.longrepr, 6000);
                        tests.insert(record.nodeid.clone(), record);
                    }
                }
                b"failure" | b"error" | b"skipped" => in_detail = false,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(tests)
}

fn attributes(element: &quick_xml::events::BytesStart) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for attr in element.attributes() {
        let attr = attr.map_err(|err| format!("invalid JUnit XML attribute: {err}"))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr
            .unescape_value()
            .map_err(|err| format!("invalid JUnit XML attribute value: {err}"))?
            .into_owned();
        map.insert(key, value);
    }
    Ok(map)
}

fn exception_from_message(message: &str) -> ExceptionInfo {
    let first_line = message.lines().next().unwrap_or("");
    match first_line.split_once(':') {
        Some((head, rest)) if is_dotted_identifier(head.trim()) => ExceptionInfo {
            exc_type: head.trim().to_string(),
            message: rest.trim().to_string(),
            ..Default::default()
        },
        _ => ExceptionInfo {
            exc_type: String::new(),
            message: first_line.to_string(),
            ..Default::default()
        },
    }
}

/// Rebuilds a pytest node id from a JUnit testcase: `file::Class::name` when `file` is present.
fn junit_nodeid(attrs: &BTreeMap<String, String>) -> String {
    let name = attrs.get("name").map(String::as_str).unwrap_or("");
    let classname = attrs.get("classname").map(String::as_str).unwrap_or("");
    match attrs.get("file") {
        Some(file) => {
            let module = file.trim_end_matches(".py").replace(['/', '\\'], ".");
            let classes = classname
                .strip_prefix(module.as_str())
                .unwrap_or("")
                .trim_start_matches('.');
            let mut id = file.clone();
            for class in classes.split('.').filter(|c| !c.is_empty()) {
                id.push_str("::");
                id.push_str(class);
            }
            format!("{id}::{name}")
        }
        // xunit2 drops the file; the module path is a guess (classes are indistinguishable).
        None if classname.is_empty() => name.to_string(),
        None => format!("{}.py::{name}", classname.replace('.', "/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_lines_become_outcomes() {
        let text = r#"{"event": "start", "nodeid": "t.py::ok"}
{"event": "phase", "nodeid": "t.py::ok", "when": "setup", "outcome": "passed", "duration": 0.1}
{"event": "phase", "nodeid": "t.py::ok", "when": "call", "outcome": "passed", "duration": 0.2}
{"event": "phase", "nodeid": "t.py::ok", "when": "teardown", "outcome": "passed", "duration": 0.0}
{"event": "start", "nodeid": "t.py::bad"}
{"event": "phase", "nodeid": "t.py::bad", "when": "call", "outcome": "failed", "longrepr": "boom", "exc": {"type": "ValueError", "message": "x", "frames": [["/v/site-packages/lib/a.py", 3, "f"]], "group": {"type": "ExceptionGroup", "size": 1}}}
{"event": "phase", "nodeid": "t.py::bad", "when": "teardown", "outcome": "failed", "longrepr": "later"}
{"event": "start", "nodeid": "t.py::slow"}
{"event": "phase", "nodeid": "t.py::slow", "when": "call", "outcome": "failed", "longrepr": "E   Failed: Timeout (>5.0s) from pytest-timeout."}
{"event": "phase", "nodeid": "t.py::fix", "when": "setup", "outcome": "failed", "longrepr": "E   RuntimeError: no loop"}
{"event": "phase", "nodeid": "t.py::skip", "when": "setup", "outcome": "skipped"}
{"event": "collect", "nodeid": "broken.py", "longrepr": "E   ImportError: nope"}
{"event": "start", "nodeid": "t.py::forever"}
{"event": "phase", "nodeid": "t.py::forever", "when": "setup", "outcome": "passed"
"#;
        let recorded = parse_recorder(text);
        let outcome = |id: &str| recorded.tests[id].outcome;
        assert_eq!(outcome("t.py::ok"), Outcome::Passed);
        assert_eq!(outcome("t.py::bad"), Outcome::Failed);
        let exc = recorded.tests["t.py::bad"].exception.as_ref().unwrap();
        assert_eq!(exc.exc_type, "ValueError");
        assert_eq!(exc.group.as_deref(), Some("ExceptionGroup"));
        assert_eq!(exc.frames[0].function, "f");
        assert_eq!(outcome("t.py::slow"), Outcome::Timeout);
        assert_eq!(outcome("t.py::fix"), Outcome::Error);
        assert_eq!(
            recorded.tests["t.py::fix"]
                .exception
                .as_ref()
                .unwrap()
                .exc_type,
            "RuntimeError"
        );
        assert_eq!(outcome("t.py::skip"), Outcome::Skipped);
        assert_eq!(outcome("broken.py"), Outcome::Error);
        assert_eq!(recorded.tests["broken.py"].phase, "collect");
        // The truncated last line is ignored; the test started and never finished.
        assert_eq!(outcome("t.py::forever"), Outcome::Hung);
        assert_eq!(recorded.exit_status, None);
        let counts = Counts::of(&recorded.tests);
        assert_eq!(
            (
                counts.passed,
                counts.failed,
                counts.errors,
                counts.timeouts,
                counts.hung
            ),
            (1, 1, 2, 1, 1)
        );
        assert_eq!(counts.total(), 7);
    }

    #[test]
    fn unfinished_tests_are_labelled_by_how_their_session_ended() {
        let text = r#"{"event": "start", "nodeid": "t.py::done"}
{"event": "phase", "nodeid": "t.py::done", "when": "setup", "outcome": "passed"}
{"event": "phase", "nodeid": "t.py::done", "when": "call", "outcome": "passed"}
{"event": "phase", "nodeid": "t.py::done", "when": "teardown", "outcome": "passed"}
{"event": "start", "nodeid": "t.py::in_setup"}
{"event": "start", "nodeid": "t.py::in_body"}
{"event": "phase", "nodeid": "t.py::in_body", "when": "setup", "outcome": "passed"}
{"event": "start", "nodeid": "t.py::in_teardown"}
{"event": "phase", "nodeid": "t.py::in_teardown", "when": "setup", "outcome": "passed"}
{"event": "phase", "nodeid": "t.py::in_teardown", "when": "call", "outcome": "passed"}
{"event": "start", "nodeid": "t.py::failed_first"}
{"event": "phase", "nodeid": "t.py::failed_first", "when": "setup", "outcome": "passed"}
{"event": "phase", "nodeid": "t.py::failed_first", "when": "call", "outcome": "failed", "longrepr": "E   ValueError: x"}
"#;
        let label = |ending: Ending| {
            let mut recorded = parse_recorder(text);
            recorded.label_unfinished(&ending, "INTERNALERROR> RuntimeError: x");
            recorded.tests
        };
        let exc = |r: &TestRecord| r.exception.clone().unwrap_or_default();
        let stalled = label(Ending::Stalled(25));
        assert_eq!(stalled["t.py::done"].outcome, Outcome::Passed);
        let body = &stalled["t.py::in_body"];
        assert_eq!((body.outcome, body.phase.as_str()), (Outcome::Hung, "call"));
        assert_eq!(exc(body).exc_type, "Stalled");
        assert!(
            exc(body).message.contains("stall watchdog"),
            "{:?}",
            exc(body)
        );
        assert!(!exc(body).message.contains("cap"));
        assert_eq!(stalled["t.py::in_setup"].phase, "setup");
        // Its body passed, its teardown never ended: it hung in teardown, it did not pass.
        let teardown = &stalled["t.py::in_teardown"];
        assert_eq!(
            (teardown.outcome, teardown.phase.as_str()),
            (Outcome::Hung, "teardown")
        );
        // A failure reported before the session ended is kept.
        assert_eq!(stalled["t.py::failed_first"].outcome, Outcome::Failed);
        assert_eq!(exc(&stalled["t.py::failed_first"]).exc_type, "ValueError");

        let capped = label(Ending::Cap(900));
        assert_eq!(capped["t.py::in_body"].outcome, Outcome::Hung);
        assert_eq!(exc(&capped["t.py::in_body"]).exc_type, "SuiteCap");
        assert!(exc(&capped["t.py::in_body"])
            .message
            .contains("wall-clock cap (900 s)"));

        let crashed = label(Ending::Exited(
            Some(3),
            Some("RuntimeError: plugin choked".into()),
        ));
        let body = &crashed["t.py::in_body"];
        assert_eq!(body.outcome, Outcome::Crashed);
        assert!(body.outcome.is_failure() && !body.outcome.is_costly());
        assert_eq!(exc(body).exc_type, "SessionEnded");
        assert!(exc(body).message.contains("exit status 3"));
        assert!(exc(body).message.contains("RuntimeError: plugin choked"));
        assert!(body.longrepr.ends_with("INTERNALERROR> RuntimeError: x"));
        assert_eq!(Counts::of(&crashed).crashed, 3);

        // Each ending says why the tests after it never started.
        assert!(Ending::Stalled(25)
            .not_run_reason()
            .contains("stall watchdog"));
        assert!(Ending::Cap(900)
            .not_run_reason()
            .contains("wall-clock cap (900 s)"));
        assert!(Ending::Exited(Some(3), Some("INTERNALERROR".into()))
            .not_run_reason()
            .contains("exit status 3"));
    }

    #[test]
    fn a_session_failing_at_start_up_gives_its_error_to_the_tests_it_never_started() {
        // A conftest raising on import (pytest's short traceback, exit status 4).
        let output = "ImportError while loading conftest '/r/tree/tests/conftest.py'.\n\
tests/conftest.py:11: in <module>\n    asyncio.set_event_loop(LOOP)\n\
/v/lib/python3.12/site-packages/asyncbis/__init__.py:99: in _raise\n    raise RuntimeError(\"gone\")\n\
E   RuntimeError: event loop policies are gone";
        let ending = Ending::Exited(
            Some(4),
            Some("RuntimeError: event loop policies are gone".into()),
        );
        let record = ending.not_started("tests/test_a.py::test_x", output, "/r/tree");
        assert_eq!(record.nodeid, "tests/test_a.py::test_x");
        assert_eq!(
            (record.outcome, record.phase.as_str()),
            (Outcome::NotStarted, "startup")
        );
        assert!(record.outcome.is_failure());
        let exc = record.exception.clone().unwrap();
        assert_eq!(exc.exc_type, "RuntimeError");
        assert_eq!(exc.message, "event loop policies are gone");
        let files: Vec<&str> = exc.frames.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "/r/tree/tests/conftest.py",
                "/v/lib/python3.12/site-packages/asyncbis/__init__.py"
            ]
        );
        assert_eq!(
            (exc.frames[0].line, exc.frames[0].function.as_str()),
            (11, "<module>")
        );
        assert!(record
            .longrepr
            .starts_with("session start-up failed (exit status 4): this test never started"));
        assert!(record.longrepr.ends_with(output));
        let mut tests = BTreeMap::new();
        tests.insert(record.nodeid.clone(), record);
        let counts = Counts::of(&tests);
        assert_eq!((counts.not_started, counts.failing()), (1, 1));

        // An INTERNALERROR at session start: Python's traceback, the last one counts.
        let internal = "INTERNALERROR> Traceback (most recent call last):\n\
INTERNALERROR>   File \"/v/site-packages/_pytest/main.py\", line 283, in wrap_session\n\
INTERNALERROR>     session.exitstatus = doit(config, session) or 0\n\
INTERNALERROR>   File \"/r/tree/conftest.py\", line 5, in pytest_sessionstart\n\
INTERNALERROR>     asyncio.get_event_loop()\n\
INTERNALERROR> RuntimeError: no loop";
        let ending = Ending::Exited(Some(3), Some("RuntimeError: no loop".into()));
        let exc = ending
            .not_started("t.py::x", internal, "/r/tree")
            .exception
            .unwrap();
        assert_eq!(exc.exc_type, "RuntimeError");
        assert_eq!(exc.frames.len(), 2);
        assert_eq!(exc.frames[1].function, "pytest_sessionstart");
        // No error line, or no error at all (a kill while collecting): said so.
        let bare = Ending::Exited(Some(4), Some("usage: pytest [options]".into()));
        assert_eq!(
            bare.not_started("t.py::x", "", "")
                .exception
                .unwrap()
                .exc_type,
            "SessionStartup"
        );
        let stalled = Ending::Stalled(105).not_started("t.py::x", "", "");
        let exc = stalled.exception.unwrap();
        assert_eq!(exc.exc_type, "Stalled");
        assert!(exc.message.contains("before any test started"));
    }

    #[test]
    fn junit_xunit1_gives_node_ids_and_outcomes() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
<testcase classname="tests.test_a.TestThing" name="test_x[1-a]" file="tests/test_a.py" line="3" time="0.01" />
<testcase classname="tests.test_a" name="test_fail" file="tests/test_a.py" line="9" time="0.02"><failure message="AssertionError: assert 1 == 2">tests/test_a.py:10: in test_fail
    assert 1 == 2
E   AssertionError: assert 1 == 2 &amp; more</failure></testcase>
<testcase classname="tests.test_a" name="test_err" file="tests/test_a.py" line="12" time="0"><error message="failed on setup with &quot;RuntimeError: x&quot;">trace</error></testcase>
<testcase classname="tests.test_a" name="test_skip" file="tests/test_a.py" line="15" time="0"><skipped type="pytest.skip" message="nope">skip</skipped></testcase>
<testcase classname="tests.test_a" name="test_slow" file="tests/test_a.py" line="20" time="5"><failure message="Failed: Timeout (&gt;5.0s) from pytest-timeout.">x</failure></testcase>
</testsuite></testsuites>"#;
        let tests = parse_junit(xml).unwrap();
        assert_eq!(
            tests["tests/test_a.py::TestThing::test_x[1-a]"].outcome,
            Outcome::Passed
        );
        let failed = &tests["tests/test_a.py::test_fail"];
        assert_eq!(failed.outcome, Outcome::Failed);
        let exc = failed.exception.as_ref().unwrap();
        assert_eq!(exc.exc_type, "AssertionError");
        assert_eq!(exc.frames[0].file, "tests/test_a.py");
        assert_eq!(exc.frames[0].line, 10);
        assert!(failed.longrepr.contains("& more"));
        assert_eq!(tests["tests/test_a.py::test_err"].outcome, Outcome::Error);
        assert_eq!(
            tests["tests/test_a.py::test_skip"].outcome,
            Outcome::Skipped
        );
        assert_eq!(
            tests["tests/test_a.py::test_slow"].outcome,
            Outcome::Timeout
        );
    }

    #[test]
    fn junit_errors_are_reported_not_panicked() {
        assert!(parse_junit("<testsuite><testcase name='a' classname='m'></testsuite>").is_err());
        let guessed =
            parse_junit("<testsuite><testcase name='t' classname='pkg.mod'/></testsuite>").unwrap();
        assert!(guessed.contains_key("pkg/mod.py::t"));
    }
}

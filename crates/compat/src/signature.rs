//! Failure signatures (exception type, normalised message, raising frame) and who raised them.

use crate::results::{ExceptionInfo, Frame, Outcome, TestRecord};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Whose code a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// The project under study (its installed package or its source tree).
    Library,
    /// The project's own tests (test files, conftest.py).
    Tests,
    /// The test harness: pytest, pytest-asyncio, AnyIO's pytest plugin, unittest, ...
    Harness,
    /// Another installed package.
    Dependency,
    Asyncio,
    Asyncbis,
    Stdlib,
    Unknown,
}

impl Owner {
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Library => "library",
            Owner::Tests => "tests",
            Owner::Harness => "harness",
            Owner::Dependency => "dependency",
            Owner::Asyncio => "asyncio",
            Owner::Asyncbis => "asyncbis",
            Owner::Stdlib => "stdlib",
            Owner::Unknown => "unknown",
        }
    }
    /// Frames of these owners are the machinery, not the code that tripped over a change.
    fn is_machinery(self) -> bool {
        matches!(
            self,
            Owner::Asyncio | Owner::Asyncbis | Owner::Stdlib | Owner::Unknown
        )
    }
}

/// Top-level modules that drive tests rather than being tested.
const HARNESS_MODULES: &[&str] = &[
    "_pytest",
    "pytest",
    "pluggy",
    "pytest_asyncio",
    "pytest_timeout",
    "xdist",
    "pytest_aiohttp",
    "pytest_mock",
    "asyncbis_compat_recorder",
];
/// Individual files of other packages that act as test harness.
const HARNESS_FILES: &[&str] = &[
    "anyio/pytest_plugin.py",
    "aiohttp/pytest_plugin.py",
    "tornado/testing.py",
];

/// Where the run happened, to tell library, tests and harness frames apart.
pub struct Context<'a> {
    /// The unpacked project tree the suite ran in.
    pub tree: &'a str,
    /// Import names that belong to the project (e.g. `socketio` for python-socketio).
    pub packages: &'a [String],
}

/// Likely import names of a PyPI project: `python-socketio` → `socketio`, `async-timeout` → `async_timeout`.
pub fn guess_packages(pypi_name: &str) -> Vec<String> {
    let normal = pypi_name.to_lowercase().replace(['-', '.'], "_");
    let mut names = vec![normal.clone()];
    for prefix in ["python_", "py_"] {
        if let Some(stripped) = normal.strip_prefix(prefix) {
            names.push(stripped.to_string());
        }
    }
    names
}

pub fn classify_frame(file: &str, context: &Context) -> Owner {
    let file = file.replace('\\', "/");
    if let Some(pos) = file.rfind("/site-packages/") {
        let inside = &file[pos + "/site-packages/".len()..];
        let top = inside.split('/').next().unwrap_or("");
        let top_module = top.trim_end_matches(".py").to_lowercase();
        if context.packages.contains(&top_module) {
            return Owner::Library;
        }
        if top_module == "asyncbis" {
            return Owner::Asyncbis;
        }
        if HARNESS_MODULES.contains(&top_module.as_str()) || HARNESS_FILES.contains(&inside) {
            return Owner::Harness;
        }
        return Owner::Dependency;
    }
    let tree = context.tree.trim_end_matches('/');
    if !tree.is_empty() && file.starts_with(tree)
        || !file.starts_with('/') && !file.starts_with('<')
    {
        let relative = file
            .strip_prefix(tree)
            .unwrap_or(&file)
            .trim_start_matches('/');
        return if is_test_path(relative) {
            Owner::Tests
        } else {
            Owner::Library
        };
    }
    if file.starts_with('<') {
        return Owner::Unknown;
    }
    if file.contains("/asyncio/") {
        return Owner::Asyncio;
    }
    if file.contains("/unittest/") {
        return Owner::Harness;
    }
    if file.contains("/lib/python3") {
        return Owner::Stdlib;
    }
    Owner::Unknown
}

fn is_test_path(relative: &str) -> bool {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    relative
        .split('/')
        .any(|part| part == "tests" || part == "test" || part == "testing")
        || name.starts_with("test_")
        || name.ends_with("_test.py")
        || name == "conftest.py"
}

/// The frame that stands for "who raised it": the innermost frame outside asyncio, asyncbis
/// and the standard library (those are the machinery the change lives in).
/// For a per-test timeout the innermost frames are pytest-timeout's signal handler; the
/// culprit is the code that was stuck, so harness frames are skipped too (`stuck`).
pub fn culprit_frame<'f>(
    frames: &'f [Frame],
    context: &Context,
    stuck: bool,
) -> Option<(&'f Frame, Owner)> {
    frames
        .iter()
        .rev()
        .map(|frame| (frame, classify_frame(&frame.file, context)))
        .find(|(_, owner)| {
            let skipped = owner.is_machinery() || (stuck && *owner == Owner::Harness);
            !skipped
        })
        .or_else(|| {
            frames
                .last()
                .map(|frame| (frame, classify_frame(&frame.file, context)))
        })
}

/// Removes what varies between runs of the same failure: addresses, numbers, paths, ids.
pub fn normalise_message(message: &str) -> String {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        [
            (r"0x[0-9a-fA-F]+", "ADDR"),
            (r"(/[\w.\-]+)+/?", "PATH"),
            (r"\d+(\.\d+)?", "N"),
            (r"\s+", " "),
        ]
        .into_iter()
        .map(|(pattern, replacement)| (Regex::new(pattern).expect("static regex"), replacement))
        .collect()
    });
    let first_line = message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut text = first_line.to_string();
    for (regex, replacement) in patterns {
        text = regex.replace_all(&text, *replacement).into_owned();
    }
    if text.chars().count() > 160 {
        text = text.chars().take(160).collect::<String>() + "…";
    }
    text
}

/// A frame written so it is the same across machines and versions: path relative to its package
/// root or project tree, and the function (no line number).
pub fn portable_location(frame: &Frame, context: &Context) -> String {
    let file = frame.file.replace('\\', "/");
    let short = if let Some(pos) = file.rfind("/site-packages/") {
        file[pos + "/site-packages/".len()..].to_string()
    } else if let Some(rest) = file.strip_prefix(context.tree.trim_end_matches('/')) {
        rest.trim_start_matches('/').to_string()
    } else if let Some(pos) = file.rfind("/lib/python3") {
        // stdlib: drop the interpreter prefix and version directory
        let rest = &file[pos + 1..];
        rest.split_once('/')
            .map(|(_, tail)| tail.to_string())
            .unwrap_or_else(|| rest.to_string())
    } else {
        file
    };
    format!("{short}:{}", frame.function)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// Stable short id (hash of type, message and frame).
    pub id: String,
    pub exc_type: String,
    pub message: String,
    /// `path:function` of the culprit frame.
    pub frame: String,
    pub owner: Owner,
}

pub fn signature_of(record: &TestRecord, context: &Context) -> Signature {
    let fallback = ExceptionInfo {
        exc_type: record.outcome.as_str().to_string(),
        message: String::new(),
        frames: Vec::new(),
        group: None,
    };
    let exc = record.exception.as_ref().unwrap_or(&fallback);
    let stuck = matches!(record.outcome, Outcome::Timeout | Outcome::Hung);
    let (frame, owner) = match culprit_frame(&exc.frames, context, stuck) {
        Some((frame, owner)) => (portable_location(frame, context), owner),
        None if record.phase == "collect" => ("<collection>".to_string(), Owner::Tests),
        None => ("<unknown>".to_string(), Owner::Unknown),
    };
    let exc_type = match &exc.group {
        _ if record.outcome == Outcome::Timeout => "Timeout".to_string(),
        Some(group) => format!("{group}[{}]", exc.exc_type),
        None if exc.exc_type.is_empty() => record.outcome.as_str().to_string(),
        None => exc.exc_type.clone(),
    };
    let message = normalise_message(&exc.message);
    let id = crate::cache::short_hash(&[exc_type.as_str(), message.as_str(), frame.as_str()]);
    Signature {
        id,
        exc_type,
        message,
        frame,
        owner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> (String, Vec<String>) {
        (
            "/c/runs/aiofoo/tree".to_string(),
            guess_packages("python-aiofoo"),
        )
    }

    #[test]
    fn frames_are_attributed_to_their_owner() {
        let (tree, packages) = context();
        let ctx = Context {
            tree: &tree,
            packages: &packages,
        };
        let sp = "/c/venv/lib/python3.12/site-packages";
        assert_eq!(
            classify_frame(&format!("{sp}/aiofoo/core.py"), &ctx),
            Owner::Library
        );
        assert_eq!(
            classify_frame(&format!("{sp}/_pytest/runner.py"), &ctx),
            Owner::Harness
        );
        assert_eq!(
            classify_frame(&format!("{sp}/pytest_asyncio/plugin.py"), &ctx),
            Owner::Harness
        );
        assert_eq!(
            classify_frame(&format!("{sp}/anyio/pytest_plugin.py"), &ctx),
            Owner::Harness
        );
        assert_eq!(
            classify_frame(&format!("{sp}/anyio/_core/_tasks.py"), &ctx),
            Owner::Dependency
        );
        assert_eq!(
            classify_frame(&format!("{sp}/asyncbis/__init__.py"), &ctx),
            Owner::Asyncbis
        );
        assert_eq!(
            classify_frame("/py/lib/python3.12/asyncio/tasks.py", &ctx),
            Owner::Asyncio
        );
        assert_eq!(
            classify_frame("/py/lib/python3.12/unittest/async_case.py", &ctx),
            Owner::Harness
        );
        assert_eq!(
            classify_frame("/py/lib/python3.12/socket.py", &ctx),
            Owner::Stdlib
        );
        assert_eq!(
            classify_frame("/c/runs/aiofoo/tree/tests/test_x.py", &ctx),
            Owner::Tests
        );
        assert_eq!(
            classify_frame("/c/runs/aiofoo/tree/src/aiofoo/x.py", &ctx),
            Owner::Library
        );
        assert_eq!(classify_frame("tests/conftest.py", &ctx), Owner::Tests);
        assert_eq!(classify_frame("<frozen runpy>", &ctx), Owner::Unknown);
        // The project itself wins over the harness list (pytest-asyncio studying itself).
        let own = guess_packages("pytest-asyncio");
        let ctx = Context {
            tree: &tree,
            packages: &own,
        };
        assert_eq!(
            classify_frame(&format!("{sp}/pytest_asyncio/plugin.py"), &ctx),
            Owner::Library
        );
    }

    #[test]
    fn messages_are_normalised() {
        assert_eq!(
            normalise_message("Task <Task pending name='Task-12' coro=<f() at /a/b.py:3>> at 0xdeadBEEF got 3.5s\nmore"),
            "Task <Task pending name='Task-N' coro=<f() at PATH:N>> at ADDR got Ns"
        );
        assert_eq!(normalise_message("  \n  got  7 items"), "got N items");
        assert_eq!(normalise_message(&"x".repeat(300)).chars().count(), 161);
    }

    #[test]
    fn signatures_group_same_failure_across_line_numbers() {
        let (tree, packages) = context();
        let ctx = Context {
            tree: &tree,
            packages: &packages,
        };
        let record = |line: u32, message: &str| TestRecord {
            nodeid: "t".into(),
            outcome: Outcome::Failed,
            phase: "call".into(),
            duration: 0.0,
            longrepr: String::new(),
            exception: Some(ExceptionInfo {
                exc_type: "RuntimeError".into(),
                message: message.into(),
                frames: vec![
                    Frame {
                        file: format!("{tree}/tests/test_a.py"),
                        line: 1,
                        function: "test_a".into(),
                    },
                    Frame {
                        file: "/v/lib/python3.12/site-packages/aiofoo/loop.py".into(),
                        line,
                        function: "get_loop".into(),
                    },
                    Frame {
                        file: "/py/lib/python3.12/asyncio/events.py".into(),
                        line: 9,
                        function: "get_event_loop".into(),
                    },
                ],
                group: None,
            }),
        };
        let a = signature_of(
            &record(10, "no current event loop in thread 'MainThread' 0x1"),
            &ctx,
        );
        let b = signature_of(
            &record(99, "no current event loop in thread 'MainThread' 0x2"),
            &ctx,
        );
        assert_eq!(a, b);
        assert_eq!(a.owner, Owner::Library);
        assert_eq!(a.frame, "aiofoo/loop.py:get_loop");
        let c = signature_of(&record(10, "something else"), &ctx);
        assert_ne!(a.id, c.id);
        // A timeout is blamed on the code that was stuck, not on pytest-timeout's handler.
        let mut stuck = record(10, "Timeout (>5.0s) from pytest-timeout.");
        stuck.outcome = Outcome::Timeout;
        if let Some(exc) = stuck.exception.as_mut() {
            exc.frames.push(Frame {
                file: "/v/lib/python3.12/site-packages/pytest_timeout.py".into(),
                line: 1,
                function: "handler".into(),
            });
        }
        let timeout = signature_of(&stuck, &ctx);
        assert_eq!(
            (timeout.exc_type.as_str(), timeout.owner),
            ("Timeout", Owner::Library)
        );
        assert_eq!(timeout.frame, "aiofoo/loop.py:get_loop");
    }
}

//! The corpus manifest: which projects to study, pinned, and how to run their suites.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Services the tool knows how to provide on 127.0.0.1.
pub const KNOWN_SERVICES: &[&str] = &["redis", "postgres", "memcached"];

/// Per-test timeout used when neither the entry nor `[defaults]` gives one.
const DEFAULT_TEST_TIMEOUT: u64 = 60;
/// Whole-suite cap used when neither the entry nor `[defaults]` gives one.
const DEFAULT_SUITE_TIMEOUT: u64 = 1800;

/// A command-line fragment written either as one shell-quoted string or as a list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Args {
    Line(String),
    List(Vec<String>),
}

impl Default for Args {
    fn default() -> Self {
        Args::List(Vec::new())
    }
}

impl Args {
    pub fn to_vec(&self) -> Result<Vec<String>, String> {
        match self {
            Args::Line(line) => shell_split(line),
            Args::List(list) => Ok(list.clone()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    timeout: Option<u64>,
    suite_timeout: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: String,
    version: String,
    #[serde(default)]
    install: Args,
    #[serde(default)]
    pytest_args: Args,
    #[serde(default)]
    tests: Args,
    #[serde(default)]
    services: Vec<String>,
    timeout: Option<u64>,
    suite_timeout: Option<u64>,
    #[serde(default)]
    flaky: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    skip: Option<String>,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    patches: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorpus {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default, rename = "project")]
    projects: Vec<RawProject>,
}

/// One project of the corpus, validated and with defaults applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProjectEntry {
    /// PyPI distribution name.
    pub name: String,
    pub version: String,
    /// Arguments to `uv pip install`, run inside the unpacked sdist.
    pub install: Vec<String>,
    /// pytest options (kept when rerunning single tests).
    pub pytest_args: Vec<String>,
    /// Test paths (replaced by node ids when rerunning single tests).
    pub tests: Vec<String>,
    pub services: Vec<String>,
    /// Per-test timeout in seconds (pytest-timeout).
    pub timeout: u64,
    /// Whole-suite wall-clock cap in seconds; the process group is killed past it.
    pub suite_timeout: u64,
    /// Node ids known to be flaky; never counted as breakage.
    pub flaky: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// When set, the entry is listed in the report as skipped with this reason.
    pub skip: Option<String>,
    pub notes: String,
    /// Patch files (`patch -p1`, in this order) applied to the unpacked sdist before any run:
    /// a maintainer's port to asyncbis. Written in the manifest as paths or `dir/*.patch`
    /// globs relative to the manifest's directory.
    pub patches: Vec<PathBuf>,
}

impl ProjectEntry {
    /// `name-version`, the identity used in the cache and the report.
    pub fn id(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

#[derive(Debug, Clone)]
pub struct Corpus {
    pub projects: Vec<ProjectEntry>,
}

pub fn load_corpus(path: &Path) -> Result<Corpus, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read corpus manifest {}: {err}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_corpus_at(&text, base).map_err(|err| format!("{}: {err}", path.display()))
}

/// Where the built-in corpora's patch files are: the corpus directory they were built from.
const BUILT_IN_CORPUS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../corpus");

/// A built-in corpus (its patches are looked up where it was built from).
pub fn parse_corpus(text: &str) -> Result<Corpus, String> {
    parse_corpus_at(text, Path::new(BUILT_IN_CORPUS_DIR))
}

/// Patch files of `patterns` (paths, or `*` in the file name), relative to `base`; each
/// pattern must name at least one file. Globs are expanded in name order.
pub fn resolve_patches(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    // Absolute: `patch` runs inside the copy of the sdist, not where the manifest was named.
    let base = std::path::absolute(base)
        .map_err(|err| format!("patches: cannot resolve {}: {err}", base.display()))?;
    let base = base.as_path();
    for pattern in patterns {
        let path = base.join(pattern);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let found: Vec<PathBuf> = match name.split_once('*') {
            None => vec![path.clone()]
                .into_iter()
                .filter(|p| p.is_file())
                .collect(),
            Some((prefix, suffix)) => {
                let dir = path.parent().unwrap_or(base);
                let mut matches: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map(|entries| {
                        entries
                            .flatten()
                            .map(|e| e.path())
                            .filter(|p| {
                                let n = p
                                    .file_name()
                                    .map(|n| n.to_string_lossy().into_owned())
                                    .unwrap_or_default();
                                p.is_file()
                                    && n.len() >= prefix.len() + suffix.len()
                                    && n.starts_with(prefix)
                                    && n.ends_with(suffix)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                matches.sort();
                matches
            }
        };
        if found.is_empty() {
            return Err(format!(
                "patches: {pattern:?} names no file (looked for {})",
                path.display()
            ));
        }
        files.extend(found);
    }
    Ok(files)
}

pub fn parse_corpus_at(text: &str, base: &Path) -> Result<Corpus, String> {
    let raw: RawCorpus = toml::from_str(text).map_err(|err| format!("invalid manifest: {err}"))?;
    let default_timeout = raw.defaults.timeout.unwrap_or(DEFAULT_TEST_TIMEOUT);
    let default_suite_timeout = raw.defaults.suite_timeout.unwrap_or(DEFAULT_SUITE_TIMEOUT);
    let mut projects = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for project in raw.projects {
        let where_ = format!("project {:?}", project.name);
        if project.name.trim().is_empty() {
            return Err("a [[project]] has an empty name".into());
        }
        if project.version.trim().is_empty() {
            return Err(format!("{where_}: empty version (pin an exact version)"));
        }
        if !seen.insert(project.name.to_lowercase()) {
            return Err(format!("{where_}: listed twice"));
        }
        for service in &project.services {
            if !KNOWN_SERVICES.contains(&service.as_str()) {
                return Err(format!(
                    "{where_}: unknown service {service:?} (known: {})",
                    KNOWN_SERVICES.join(", ")
                ));
            }
        }
        let timeout = project.timeout.unwrap_or(default_timeout);
        let suite_timeout = project.suite_timeout.unwrap_or(default_suite_timeout);
        if timeout == 0 || suite_timeout == 0 {
            return Err(format!("{where_}: timeouts must be positive"));
        }
        let field = |args: &Args, what: &str| {
            args.to_vec()
                .map_err(|err| format!("{where_}: {what}: {err}"))
        };
        let install = field(&project.install, "install")?;
        if install.is_empty() && project.skip.is_none() {
            return Err(format!(
                "{where_}: install is empty (at least \".\" and pytest)"
            ));
        }
        let patches =
            resolve_patches(&project.patches, base).map_err(|err| format!("{where_}: {err}"))?;
        projects.push(ProjectEntry {
            patches,
            install,
            pytest_args: field(&project.pytest_args, "pytest_args")?,
            tests: field(&project.tests, "tests")?,
            name: project.name,
            version: project.version,
            services: project.services,
            timeout,
            suite_timeout,
            flaky: project.flaky,
            env: project.env,
            skip: project.skip,
            notes: project.notes,
        });
    }
    if projects.is_empty() {
        return Err("the manifest lists no [[project]]".into());
    }
    Ok(Corpus { projects })
}

/// Splits a command line the way a POSIX shell would (quotes and backslashes; no expansion).
pub fn shell_split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => current.push(ch),
                        None => return Err(format!("unclosed single quote in {line:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => current.push(ch),
                            Some(ch) => {
                                current.push('\\');
                                current.push(ch);
                            }
                            None => return Err(format!("unclosed double quote in {line:?}")),
                        },
                        Some(ch) => current.push(ch),
                        None => return Err(format!("unclosed double quote in {line:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(ch) => current.push(ch),
                    None => return Err(format!("trailing backslash in {line:?}")),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            shell_split(r#"".[redis]" -o "python_files=*.py" 'a b' c\ d"#).unwrap(),
            vec![".[redis]", "-o", "python_files=*.py", "a b", "c d"]
        );
        assert_eq!(shell_split("  ").unwrap(), Vec::<String>::new());
        assert_eq!(
            shell_split(r#"-m "not a and not b""#).unwrap(),
            vec!["-m", "not a and not b"]
        );
        assert!(shell_split("\"open").is_err());
        assert!(shell_split("'open").is_err());
    }

    #[test]
    fn parses_entries_with_defaults() {
        let corpus = parse_corpus(
            r#"
            [defaults]
            timeout = 30
            [[project]]
            name = "aioitertools"
            version = "0.13.0"
            install = ". pytest"
            pytest_args = ["-o", "python_files=*.py"]
            tests = "aioitertools/tests/asyncio.py"
            [[project]]
            name = "redis"
            version = "8.1.0"
            install = ". pytest"
            services = ["redis"]
            timeout = 90
            suite_timeout = 600
            flaky = ["tests/a.py::b"]
            env = { PGHOST = "127.0.0.1" }
            "#,
        )
        .unwrap();
        let first = &corpus.projects[0];
        assert_eq!(first.install, vec![".", "pytest"]);
        assert_eq!(first.timeout, 30);
        assert_eq!(first.suite_timeout, DEFAULT_SUITE_TIMEOUT);
        assert_eq!(first.tests, vec!["aioitertools/tests/asyncio.py"]);
        assert_eq!(first.id(), "aioitertools-0.13.0");
        let second = &corpus.projects[1];
        assert_eq!(second.timeout, 90);
        assert_eq!(second.services, vec!["redis"]);
        assert_eq!(second.env["PGHOST"], "127.0.0.1");
    }

    #[test]
    fn rejects_bad_manifests_with_reasons() {
        let err = |text: &str| parse_corpus(text).unwrap_err();
        assert!(err("").contains("no [[project]]"));
        assert!(
            err("[[project]]\nname = \"x\"\nversion = \"\"\ninstall = \".\"")
                .contains("empty version")
        );
        assert!(err(
            "[[project]]\nname = \"x\"\nversion = \"1\"\ninstall = \".\"\nservices = [\"mongo\"]"
        )
        .contains("unknown service"));
        assert!(err("[[project]]\nname = \"x\"\nversion = \"1\"\ninstall = \".\"\n[[project]]\nname = \"X\"\nversion = \"2\"\ninstall = \".\"")
            .contains("listed twice"));
        assert!(
            err("[[project]]\nname = \"x\"\nversion = \"1\"\ninstall = \".\"\ncolour = 1")
                .contains("invalid manifest")
        );
        assert!(
            err("[[project]]\nname = \"x\"\nversion = \"1\"\ninstall = \"'\"").contains("unclosed")
        );
        assert!(
            err("[[project]]\nname = \"x\"\nversion = \"1\"\ninstall = \".\"\ntimeout = 0")
                .contains("positive")
        );
    }
}

//! Result cache: every suite run is stored under a key naming (project, version, Python, switch
//! set, and what else decides its outcome), so an interrupted study resumes where it stopped.

use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};

/// FNV-1a over the parts (with separators), as 16 hex digits. Not cryptographic: it only
/// needs to tell inputs apart.
pub fn short_hash(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0x1f)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Hash of a file's content (for the asyncbis wheel: a rebuilt wheel invalidates asyncbis runs).
pub fn file_hash(path: &Path) -> Result<String, String> {
    let bytes =
        std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{hash:016x}"))
}

/// Which switches were off for a run; `None` means a stock asyncio run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Stock { attempt: u8 },
    Asyncbis { disabled: Vec<String> },
}

impl Mode {
    /// Short human-readable label, also used in file names.
    pub fn label(&self) -> String {
        match self {
            Mode::Stock { attempt } => format!("stock-{attempt}"),
            Mode::Asyncbis { disabled } if disabled.is_empty() => "asyncbis".to_string(),
            Mode::Asyncbis { disabled } if disabled.len() > 2 => {
                let on: Vec<&str> = crate::analysis::SWITCHES
                    .iter()
                    .filter(|s| !disabled.iter().any(|d| d == *s))
                    .copied()
                    .collect();
                match on.as_slice() {
                    [] => "asyncbis-all-off".to_string(),
                    [only] => format!("asyncbis-only-{only}"),
                    _ => format!("asyncbis-off-{}-switches", disabled.len()),
                }
            }
            Mode::Asyncbis { disabled } => {
                let mut sorted = disabled.clone();
                sorted.sort();
                format!("asyncbis-off-{}", sorted.join("+"))
            }
        }
    }
}

/// Everything that decides the outcome of one suite run.
pub struct RunKey<'a> {
    pub project: &'a str,
    pub version: &'a str,
    pub python: &'a str,
    pub mode: &'a Mode,
    /// Hash of the manifest entry's install line, arguments and timeouts.
    pub entry_fingerprint: &'a str,
    /// Hash of the asyncbis wheel (asyncbis runs only).
    pub wheel_fingerprint: &'a str,
    /// Node ids when only some tests are rerun; empty for the whole suite.
    pub selection: &'a [String],
}

impl RunKey<'_> {
    pub fn file_name(&self) -> String {
        let wheel = match self.mode {
            Mode::Stock { .. } => "",
            Mode::Asyncbis { .. } => self.wheel_fingerprint,
        };
        let mut disabled = match self.mode {
            Mode::Asyncbis { disabled } => disabled.clone(),
            Mode::Stock { .. } => Vec::new(),
        };
        disabled.sort();
        let selection = self.selection.join("\n");
        let digest = short_hash(&[
            self.entry_fingerprint,
            wheel,
            &disabled.join(","),
            &selection,
        ]);
        format!(
            "{}-{}/py{}/{}-{}.json",
            self.project,
            self.version,
            self.python,
            self.mode.label(),
            &digest[..12]
        )
    }
}

pub struct Cache {
    root: PathBuf,
    /// When false, nothing is read (a forced fresh run) but results are still written.
    pub read: bool,
}

impl Cache {
    pub fn new(root: PathBuf, read: bool) -> Cache {
        Cache { root, read }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn load<T: DeserializeOwned>(&self, key: &RunKey) -> Option<T> {
        if !self.read {
            return None;
        }
        let text = std::fs::read_to_string(self.root.join("results").join(key.file_name())).ok()?;
        // An unreadable entry (older format, partial write) is a cache miss, not an error.
        serde_json::from_str(&text).ok()
    }

    pub fn store<T: Serialize>(&self, key: &RunKey, value: &T) -> Result<(), String> {
        let path = self.root.join("results").join(key.file_name());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
        }
        let text =
            serde_json::to_string(value).map_err(|err| format!("cannot encode result: {err}"))?;
        let partial = path.with_extension("json.part");
        std::fs::write(&partial, text)
            .map_err(|err| format!("cannot write {}: {err}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(mode: &'a Mode, selection: &'a [String], wheel: &'a str) -> RunKey<'a> {
        RunKey {
            project: "janus",
            version: "2.0.0",
            python: "3.12",
            mode,
            entry_fingerprint: "e1",
            wheel_fingerprint: wheel,
            selection,
        }
    }

    #[test]
    fn keys_separate_what_changes_outcomes() {
        let stock1 = Mode::Stock { attempt: 1 };
        let stock2 = Mode::Stock { attempt: 2 };
        let all_on = Mode::Asyncbis { disabled: vec![] };
        let off_ab = Mode::Asyncbis {
            disabled: vec!["a".into(), "b".into()],
        };
        let off_ba = Mode::Asyncbis {
            disabled: vec!["b".into(), "a".into()],
        };
        let none: Vec<String> = vec![];
        let some = vec!["t.py::x".to_string()];
        let k = |m, s, w| key(m, s, w).file_name();
        assert_ne!(k(&stock1, &none, "w"), k(&stock2, &none, "w"));
        // Stock runs do not depend on the wheel; asyncbis runs do.
        assert_eq!(k(&stock1, &none, "w1"), k(&stock1, &none, "w2"));
        assert_ne!(k(&all_on, &none, "w1"), k(&all_on, &none, "w2"));
        assert_ne!(k(&all_on, &none, "w"), k(&all_on, &some, "w"));
        assert_eq!(k(&off_ab, &some, "w"), k(&off_ba, &some, "w"));
        assert!(k(&all_on, &none, "w").starts_with("janus-2.0.0/py3.12/asyncbis-"));
        let all: Vec<String> = crate::analysis::SWITCHES
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            Mode::Asyncbis {
                disabled: all.clone()
            }
            .label(),
            "asyncbis-all-off"
        );
        let only_root = Mode::Asyncbis {
            disabled: all[1..].to_vec(),
        };
        assert_eq!(only_root.label(), "asyncbis-only-root-task-group");
        assert_ne!(short_hash(&["ab", "c"]), short_hash(&["a", "bc"]));
    }

    #[test]
    fn store_then_load_round_trips() {
        let dir =
            std::env::temp_dir().join(format!("asyncbis-compat-cache-test-{}", std::process::id()));
        let cache = Cache::new(dir.clone(), true);
        let mode = Mode::Stock { attempt: 1 };
        let key = key(&mode, &[], "");
        assert_eq!(cache.load::<Vec<u32>>(&key), None);
        cache.store(&key, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(cache.load::<Vec<u32>>(&key), Some(vec![1, 2, 3]));
        let no_read = Cache::new(dir.clone(), false);
        assert_eq!(no_read.load::<Vec<u32>>(&key), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}

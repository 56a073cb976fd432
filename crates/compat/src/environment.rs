//! Interpreters, uv, sdists, venvs and the asyncbis wheel: what a suite needs before it runs.

use crate::process::{output_of, run_capped};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const RECORDER_PLUGIN: &str = include_str!("python/asyncbis_compat_recorder.py");
const FETCH_SDIST: &str = include_str!("python/fetch_sdist.py");
const INSTALLED_WHEEL: &str = include_str!("python/installed_wheel.py");
/// Installs may compile (C extensions from sdists); generous but bounded.
const INSTALL_CAP: Duration = Duration::from_secs(1800);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Python {
    pub path: PathBuf,
    /// Full version, e.g. 3.12.1.
    pub version: String,
}

impl Python {
    /// `3.12` from `3.12.1`.
    pub fn minor(&self) -> String {
        self.version
            .split('.')
            .take(2)
            .collect::<Vec<_>>()
            .join(".")
    }
}

fn version_of(path: &Path) -> Result<String, String> {
    let out = output_of(
        Command::new(path).args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]),
    )?;
    Ok(out.trim().to_string())
}

fn pyenv_root() -> Option<PathBuf> {
    if let Ok(root) = std::env::var("PYENV_ROOT") {
        return Some(PathBuf::from(root));
    }
    if let Ok(out) = output_of(Command::new("pyenv").arg("root")) {
        return Some(PathBuf::from(out.trim()));
    }
    std::env::var("HOME")
        .ok()
        .map(|home| Path::new(&home).join(".pyenv"))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Finds an interpreter from a path or a version (`3.12`, `3.12.1`): pyenv's versions first,
/// then `python3.12` on PATH, then uv's own discovery.
pub fn resolve_python(spec: &str) -> Result<Python, String> {
    let from_path = |path: PathBuf| -> Result<Python, String> {
        let version = version_of(&path)?;
        Ok(Python { path, version })
    };
    if spec.contains('/') {
        let path = PathBuf::from(spec);
        if !path.exists() {
            return Err(format!("no interpreter at {spec}"));
        }
        return from_path(path);
    }
    if spec == "python3" {
        return find_on_path("python3")
            .ok_or("no python3 on PATH".to_string())
            .and_then(from_path);
    }
    if !spec.chars().all(|c| c.is_ascii_digit() || c == '.') || spec.is_empty() {
        return Err(format!(
            "--python takes a path or a version like 3.12, not {spec:?}"
        ));
    }
    if let Some(root) = pyenv_root() {
        let mut matches: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root.join("versions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let matches_spec = name == spec || name.starts_with(&format!("{spec}."));
                let numbers: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
                let python = entry.path().join("bin/python3");
                (matches_spec && python.exists()).then_some((numbers?, python))
            })
            .collect();
        matches.sort();
        if let Some((_, path)) = matches.pop() {
            return from_path(path);
        }
    }
    let minor: String = spec.split('.').take(2).collect::<Vec<_>>().join(".");
    if let Some(path) = find_on_path(&format!("python{minor}")) {
        let python = from_path(path)?;
        if python.version.starts_with(spec) {
            return Ok(python);
        }
    }
    if let Ok(out) = output_of(Command::new("uv").args(["python", "find", spec])) {
        return from_path(PathBuf::from(out.trim()));
    }
    Err(format!(
        "no Python {spec} found (looked in pyenv versions, PATH and `uv python find`)"
    ))
}

/// The interpreter's standard library directory (where its asyncio lives).
pub fn stdlib_dir(python: &Python) -> Option<PathBuf> {
    output_of(Command::new(&python.path).args([
        "-c",
        "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
    ]))
    .ok()
    .map(|out| PathBuf::from(out.trim()))
    .filter(|dir| dir.is_absolute())
}

/// A build or install tool (uv, maturin): on PATH, else in the tool's own venv under the cache
/// (`<cache>/tools`), installed there from PyPI on first use and said so. Never installed into
/// the user's environment.
pub fn ensure_tool(program: &str, host: &Python, cache: &Path) -> Result<PathBuf, String> {
    if let Some(found) = find_on_path(program) {
        return Ok(found);
    }
    if program == "uv" {
        // The `uv` distribution installed for the interpreter (pip install uv) without its bin
        // directory on PATH.
        if let Ok(out) =
            output_of(Command::new(&host.path).args(["-c", "import uv; print(uv.find_uv_bin())"]))
        {
            return Ok(PathBuf::from(out.trim()));
        }
    }
    let tools = cache.join("tools");
    let private = tools.join("bin").join(program);
    if private.is_file() {
        return Ok(private);
    }
    eprintln!(
        "asyncbis-compat: {program} is not on PATH; installing it from PyPI into {} \
         (this tool's private venv, not your environment; put {program} on PATH to use yours)",
        tools.display()
    );
    if !tools.join("bin/python").exists() {
        output_of(Command::new(&host.path).args(["-m", "venv"]).arg(&tools)).map_err(|err| {
            format!(
                "{program} is needed and not on PATH, and {} cannot make a venv to hold it \
                 ({err}); install {program} (e.g. `pipx install {program}`) and run again",
                host.path.display()
            )
        })?;
    }
    output_of(Command::new(tools.join("bin/python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        program,
    ]))
    .map_err(|err| {
        format!(
            "could not install {program} into {}: {err}; install {program} and run again",
            tools.display()
        )
    })?;
    if private.is_file() {
        Ok(private)
    } else {
        Err(format!(
            "installing {program} into {} left no {}",
            tools.display(),
            private.display()
        ))
    }
}

/// The asyncbis that `python` imports, packed into a wheel under `cache` (see
/// python/installed_wheel.py): the study tests what the user has installed, without building.
pub fn installed_wheel(python: &Python, cache: &Path) -> Result<PathBuf, String> {
    let out = cache.join("wheels").join("installed").join(&python.version);
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(&python.path)
        .args(["-c", INSTALLED_WHEEL])
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", python.path.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        return Err(format!(
            "{}; install asyncbis for that interpreter (`{} -m pip install PATH/TO/asyncbis`), \
             or give --wheel PATH (a built asyncbis wheel) or --asyncbis-src DIR (build one from \
             a checkout with maturin), or --python another interpreter",
            stderr.trim(),
            python.path.display()
        ));
    }
    if !output.status.success() {
        return Err(format!(
            "packing the installed asyncbis of {} into a wheel failed: {}",
            python.path.display(),
            crate::process::tail(&stderr, 1500)
        ));
    }
    let mut lines = stdout.lines();
    let about = lines.next().unwrap_or("");
    let wheel = lines
        .next()
        .map(PathBuf::from)
        .ok_or_else(|| format!("installed_wheel.py printed no wheel: {stdout}"))?;
    let mut fields = about.split('\t');
    let (version, dir, kind) = (
        fields.next().unwrap_or("?"),
        fields.next().unwrap_or("?"),
        fields.next().unwrap_or("installed"),
    );
    eprintln!(
        "asyncbis-compat: testing the asyncbis {version} {kind} for {} ({dir}), packed into {}",
        python.path.display(),
        wheel.display()
    );
    Ok(wheel)
}

/// Downloads (once) and unpacks (once) the sdist of `name==version`; returns the project root.
pub fn fetch_sdist(
    host: &Python,
    cache: &Path,
    name: &str,
    version: &str,
) -> Result<PathBuf, String> {
    let tree = cache.join("src").join(format!("{name}-{version}"));
    if tree.join(".asyncbis-compat-unpacked").exists() {
        return Ok(tree);
    }
    std::fs::create_dir_all(cache.join("src"))
        .map_err(|err| format!("cannot create cache: {err}"))?;
    let log = cache
        .join("src")
        .join(format!("{name}-{version}.fetch.log"));
    let _ = std::fs::remove_file(&log);
    let mut command = Command::new(&host.path);
    command
        .args(["-c", FETCH_SDIST, name, version])
        .arg(cache.join("sdists"))
        .arg(&tree);
    let finished = run_capped(&mut command, &log, Duration::from_secs(900))?;
    if finished.code != Some(0) {
        return Err(format!(
            "could not fetch the sdist of {name}=={version}: {}",
            crate::process::read_tail(&log, 800)
        ));
    }
    std::fs::write(tree.join(".asyncbis-compat-unpacked"), "")
        .map_err(|err| format!("cannot mark {}: {err}", tree.display()))?;
    Ok(tree)
}

/// A ready venv for one project on one Python.
#[derive(Debug, Clone)]
pub struct Venv {
    pub dir: PathBuf,
    pub python: PathBuf,
}

impl Venv {
    pub fn bin(&self, program: &str) -> PathBuf {
        self.dir.join("bin").join(program)
    }
}

/// Makes (or reuses, when `fingerprint` matches) the venv with the project, its test
/// dependencies, pytest-timeout and the recorder plugin.
pub fn prepare_venv(
    uv: &Path,
    python: &Python,
    venv_dir: &Path,
    tree: &Path,
    install: &[String],
    fingerprint: &str,
) -> Result<Venv, String> {
    let marker = venv_dir.join(".asyncbis-compat-ready");
    let venv_python = venv_dir.join("bin/python");
    let ready = std::fs::read_to_string(&marker)
        .map(|m| m == fingerprint)
        .unwrap_or(false);
    if !ready {
        if venv_dir.exists() {
            std::fs::remove_dir_all(venv_dir)
                .map_err(|err| format!("cannot remove old venv {}: {err}", venv_dir.display()))?;
        }
        let parent = venv_dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
        // The log sits beside the venv: uv refuses to create a venv in an existing directory.
        let log = venv_dir.with_extension("install.log");
        let _ = std::fs::remove_file(&log);
        let step = |args: Vec<String>, what: &str| -> Result<(), String> {
            let mut command = Command::new(uv);
            command
                .args(&args)
                .current_dir(tree)
                .env_remove("VIRTUAL_ENV")
                // Only interpreters on this machine: uv must never try to download one.
                .env("UV_PYTHON_DOWNLOADS", "never");
            let finished = run_capped(&mut command, &log, INSTALL_CAP)?;
            if finished.code != Some(0) {
                return Err(format!(
                    "{what} failed: {}",
                    crate::process::read_tail(&log, 1200)
                ));
            }
            Ok(())
        };
        let venv_arg = venv_dir.to_string_lossy().into_owned();
        let python_arg = python.path.to_string_lossy().into_owned();
        step(
            vec![
                "venv".into(),
                "--python".into(),
                python_arg,
                venv_arg.clone(),
            ],
            "creating the venv",
        )?;
        let target = venv_python.to_string_lossy().into_owned();
        let mut project = vec![
            "pip".into(),
            "install".into(),
            "--python".into(),
            target.clone(),
        ];
        project.extend(install.iter().cloned());
        step(project, "installing the project and its test dependencies")?;
        let extras = vec![
            "pip".into(),
            "install".into(),
            "--python".into(),
            target,
            "pytest-timeout".into(),
        ];
        step(extras, "installing pytest-timeout")?;
        std::fs::write(&marker, fingerprint)
            .map_err(|err| format!("cannot write {}: {err}", marker.display()))?;
    }
    // Rewritten every time: a venv made by an older asyncbis-compat gets the current recorder.
    let purelib = output_of(Command::new(&venv_python).args([
        "-c",
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
    ]))?;
    let plugin = Path::new(purelib.trim()).join("asyncbis_compat_recorder.py");
    std::fs::write(&plugin, RECORDER_PLUGIN)
        .map_err(|err| format!("cannot write {}: {err}", plugin.display()))?;
    Ok(Venv {
        dir: venv_dir.to_path_buf(),
        python: venv_python,
    })
}

/// Installed distributions and versions (`uv pip freeze`).
pub fn freeze(uv: &Path, venv: &Venv) -> Result<BTreeMap<String, String>, String> {
    let text = output_of(
        Command::new(uv)
            .args(["pip", "freeze", "--python"])
            .arg(&venv.python),
    )?;
    Ok(parse_freeze(&text))
}

/// Installs the asyncbis wheel into the venv unless this very wheel is already there.
pub fn ensure_wheel(uv: &Path, venv: &Path, wheel: &Path, fingerprint: &str) -> Result<(), String> {
    let marker = venv.join(".asyncbis-compat-wheel");
    if std::fs::read_to_string(&marker)
        .map(|m| m == fingerprint)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let log = venv.join("install.log");
    let mut command = Command::new(uv);
    command
        .args([
            "pip",
            "install",
            "--reinstall-package",
            "asyncbis",
            "--python",
        ])
        .arg(venv.join("bin/python"))
        .arg(wheel)
        .env_remove("VIRTUAL_ENV")
        // Only interpreters on this machine: uv must never try to download one.
        .env("UV_PYTHON_DOWNLOADS", "never");
    let finished = run_capped(&mut command, &log, INSTALL_CAP)?;
    if finished.code != Some(0) {
        return Err(format!(
            "installing the asyncbis wheel failed: {}",
            crate::process::read_tail(&log, 1200)
        ));
    }
    std::fs::write(&marker, fingerprint)
        .map_err(|err| format!("cannot write {}: {err}", marker.display()))
}

const TOP_LEVEL: &str = r#"
import sys, importlib.metadata as md
dist = md.distribution(sys.argv[1])
names = set((dist.read_text("top_level.txt") or "").split())
for f in dist.files or []:
    head = f.parts[0] if f.parts else ""
    if head.endswith((".dist-info", ".data", ".pth")) or head in ("..", "__pycache__", ""):
        continue
    if len(f.parts) > 1 or head.endswith(".py"):
        names.add(head[:-3] if head.endswith(".py") else head)
print("\n".join(sorted(names)))
"#;

/// Import names the installed distribution provides (e.g. `socketio` for python-socketio).
/// Empty when it cannot tell; callers fall back to guessing from the name.
pub fn top_level_packages(venv_python: &Path, dist_name: &str) -> Vec<String> {
    output_of(Command::new(venv_python).args(["-c", TOP_LEVEL, dist_name]))
        .map(|out| {
            out.lines()
                .map(|l| l.trim().to_lowercase())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `name==version` lines of `pip freeze`; other forms (editable, direct URLs) keep their text.
pub fn parse_freeze(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| match line.split_once("==") {
            Some((name, version)) => (name.trim().to_lowercase(), version.trim().to_string()),
            None => match line.split_once(" @ ") {
                Some((name, url)) => (name.trim().to_lowercase(), url.trim().to_string()),
                None => (line.trim().to_lowercase(), String::new()),
            },
        })
        .collect()
}

/// Builds the asyncbis wheel for `python` from the repository at `source` with maturin.
pub fn build_wheel(
    host: &Python,
    python: &Python,
    source: &Path,
    cache: &Path,
) -> Result<PathBuf, String> {
    let out = cache.join("wheels").join(&python.version);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)
        .map_err(|err| format!("cannot create {}: {err}", out.display()))?;
    let maturin = ensure_tool("maturin", host, cache)?;
    let log = out.join("build.log");
    let mut command = Command::new(maturin);
    command
        .args(["build", "--release", "-i"])
        .arg(&python.path)
        .arg("--out")
        .arg(&out)
        .current_dir(source);
    let finished = run_capped(&mut command, &log, Duration::from_secs(3600))?;
    if finished.code != Some(0) {
        return Err(format!(
            "building the asyncbis wheel failed: {}",
            crate::process::read_tail(&log, 1500)
        ));
    }
    newest_wheel(&out).ok_or_else(|| format!("maturin built no wheel into {}", out.display()))
}

fn newest_wheel(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .max_by_key(|path| path.metadata().and_then(|m| m.modified()).ok())
}

/// Checks a `--wheel` argument up front: an existing file named as pip and uv require
/// (`name-version[-build]-pytag-abitag-platform.whl`). uv rejects any other name, which would
/// otherwise surface as a setup failure of every project whose venv is made afresh.
pub fn check_wheel_path(path: &Path) -> Result<(), String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".whl").ok_or_else(|| {
        format!(
            "--wheel {}: not a wheel (the name must end in .whl)",
            path.display()
        )
    })?;
    let parts: Vec<&str> = stem.split('-').collect();
    let tags_ok = matches!(parts.len(), 5 | 6)
        && parts.iter().all(|p| !p.is_empty())
        && !parts[parts.len() - 3].starts_with(|c: char| c.is_ascii_digit());
    if !tags_ok {
        return Err(format!(
            "--wheel {}: {name:?} is not a wheel file name \
             (name-version-pythontag-abitag-platform.whl, as maturin writes it); \
             installers refuse other names, so keep the name the build gave it",
            path.display()
        ));
    }
    if !path.is_file() {
        return Err(format!("--wheel {}: no such file", path.display()));
    }
    Ok(())
}

/// Picks the wheel matching `python` (cpXY or abi3 tag) among the given ones.
pub fn pick_wheel<'w>(wheels: &'w [PathBuf], python: &Python) -> Option<&'w PathBuf> {
    let tag = format!("-cp{}-", python.minor().replace('.', ""));
    wheels
        .iter()
        .find(|w| w.to_string_lossy().contains(&tag))
        .or_else(|| wheels.iter().find(|w| w.to_string_lossy().contains("abi3")))
        .or_else(|| (wheels.len() == 1).then(|| &wheels[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_lines_are_parsed() {
        let installed = parse_freeze(
            "aiohttp==3.14.5\nPytest==9.0.1\nfoo @ file:///x/foo.whl\n# comment\n-e /src\n",
        );
        assert_eq!(installed["aiohttp"], "3.14.5");
        assert_eq!(installed["pytest"], "9.0.1");
        assert_eq!(installed["foo"], "file:///x/foo.whl");
        assert_eq!(installed["-e /src"], "");
    }

    #[test]
    fn wheel_names_are_checked() {
        let dir = std::env::temp_dir().join(format!("asyncbis-wheel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("asyncbis-0.1.0-cp312-cp312-manylinux_2_34_x86_64.whl");
        std::fs::write(&good, b"").unwrap();
        assert!(check_wheel_path(&good).is_ok());
        let renamed = dir.join("study-wheel-2026-11-26-cp312.whl");
        std::fs::write(&renamed, b"").unwrap();
        let err = check_wheel_path(&renamed).unwrap_err();
        assert!(err.contains("is not a wheel file name"), "{err}");
        let err = check_wheel_path(&dir.join("asyncbis-0.1.0.tar.gz")).unwrap_err();
        assert!(err.contains("must end in .whl"), "{err}");
        let err =
            check_wheel_path(&dir.join("asyncbis-0.1.0-cp311-cp311-linux_x86_64.whl")).unwrap_err();
        assert!(err.contains("no such file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wheels_are_picked_by_tag() {
        let py = Python {
            path: "/p".into(),
            version: "3.12.1".into(),
        };
        let wheels: Vec<PathBuf> = vec![
            "a/asyncbis-0.1.0-cp311-cp311-linux_x86_64.whl".into(),
            "a/asyncbis-0.1.0-cp312-cp312-linux_x86_64.whl".into(),
        ];
        assert!(pick_wheel(&wheels, &py)
            .unwrap()
            .to_string_lossy()
            .contains("cp312"));
        let abi3: Vec<PathBuf> = vec![
            "a/asyncbis-0.1.0-cp311-abi3-linux_x86_64.whl".into(),
            "b/x-cp39-cp39.whl".into(),
        ];
        assert!(pick_wheel(&abi3, &py)
            .unwrap()
            .to_string_lossy()
            .contains("abi3"));
        let other: Vec<PathBuf> = vec!["a/x-cp39-cp39.whl".into(), "b/y-cp310-cp310.whl".into()];
        assert!(pick_wheel(&other, &py).is_none());
        assert!(resolve_python("not a version").is_err());
    }
}

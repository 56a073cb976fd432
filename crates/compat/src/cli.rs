//! Command-line interface (hand-rolled: a dozen options do not justify a parser crate's build time).

use std::path::PathBuf;

pub const USAGE: &str = "\
asyncbis-compat: how badly do asyncio projects break under asyncbis?

USAGE:
    asyncbis-compat [run] [OPTIONS]         study a corpus of PyPI projects
    asyncbis-compat check PATH [OPTIONS]    the same comparison on a local project
    asyncbis-compat list [--corpus FILE]    validate a manifest and list its projects
    asyncbis-compat render --from report.json [--out DIR]   re-render a report
    asyncbis-compat services NAME...        start servers (redis, postgres, memcached) on 127.0.0.1

OPTIONS:
    --corpus FILE|quick|default   corpus manifest (default: quick, the built-in quick subset)
    --python VER|PATH             interpreter (repeatable; default: python3 on PATH)
    --wheel PATH                  asyncbis wheel to install (repeatable, one per Python)
    --asyncbis-src DIR            build the wheel from this repository with maturin instead
    --stock-only                  baseline runs only (no asyncbis needed)
    --keep-off SWITCH[,SWITCH]    switches off in every asyncbis run (e.g. no-loop-policies,
                                  so harnesses keep working and deeper breakage shows)
    --out DIR                     report directory (default: report)
    --cache DIR                   cache (default: $ASYNCBIS_COMPAT_CACHE or ~/.cache/asyncbis-compat)
    --jobs N                      projects run in parallel (default: 1)
    --shard I/N                   only the I-th of N slices of the corpus (1-based)
    --only NAME[,NAME]            only these projects
    --fresh                       ignore cached results (they are still rewritten)
    --no-services                 never install or start servers; skip entries needing them
    --quiet                       no progress lines
check OPTIONS:
    --pytest-args STR             pytest options, kept when single tests are rerun
    --tests STR                   test paths (default: none, pytest's own discovery)
    --install STR                 extra `uv pip install` arguments (default: \". pytest\")
    --timeout S, --suite-timeout S   per-test and whole-suite limits (default 60, 1800)

Exit status: 0 done; 1 some project was not activated or (check) tests newly fail; 2 usage or setup error.
";

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run,
    Check(PathBuf),
    List,
    Render(PathBuf),
    Services(Vec<String>),
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub command: Command,
    pub corpus: String,
    pub pythons: Vec<String>,
    pub wheels: Vec<PathBuf>,
    pub asyncbis_src: Option<PathBuf>,
    pub stock_only: bool,
    pub keep_off: Vec<String>,
    pub out: PathBuf,
    pub cache: Option<PathBuf>,
    pub jobs: usize,
    pub shard: Option<(usize, usize)>,
    pub only: Vec<String>,
    pub fresh: bool,
    pub no_services: bool,
    pub quiet: bool,
    pub pytest_args: Option<String>,
    pub tests: Option<String>,
    pub install: Option<String>,
    pub timeout: Option<u64>,
    pub suite_timeout: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            command: Command::Run,
            corpus: "quick".into(),
            pythons: Vec::new(),
            wheels: Vec::new(),
            asyncbis_src: None,
            stock_only: false,
            keep_off: Vec::new(),
            out: PathBuf::from("report"),
            cache: None,
            jobs: 1,
            shard: None,
            only: Vec::new(),
            fresh: false,
            no_services: false,
            quiet: false,
            pytest_args: None,
            tests: None,
            install: None,
            timeout: None,
            suite_timeout: None,
        }
    }
}

pub fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--shard takes I/N with 1 <= I <= N, not {text:?}");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut rest = args.iter().peekable();
    let mut render_from: Option<PathBuf> = None;
    let mut command_word: Option<String> = None;
    let mut positional: Vec<String> = Vec::new();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{what} needs a value")),
            }
        };
        let number = |text: String, what: &str| -> Result<u64, String> {
            text.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{what} takes a positive number, not {text:?}"))
        };
        match name.as_str() {
            "-h" | "--help" => options.command = Command::Help,
            "-V" | "--version" => options.command = Command::Version,
            "--corpus" => options.corpus = value("--corpus")?,
            "--python" => options.pythons.push(value("--python")?),
            "--wheel" => options.wheels.push(PathBuf::from(value("--wheel")?)),
            "--asyncbis-src" => {
                options.asyncbis_src = Some(PathBuf::from(value("--asyncbis-src")?))
            }
            "--stock-only" => options.stock_only = true,
            "--keep-off" => {
                for switch in value("--keep-off")?
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    if !crate::analysis::SWITCHES.contains(&switch) {
                        return Err(format!(
                            "--keep-off: unknown switch {switch:?} (known: {})",
                            crate::analysis::SWITCHES.join(", ")
                        ));
                    }
                    if !options.keep_off.iter().any(|s| s == switch) {
                        options.keep_off.push(switch.to_string());
                    }
                }
            }
            "--out" => options.out = PathBuf::from(value("--out")?),
            "--cache" => options.cache = Some(PathBuf::from(value("--cache")?)),
            "--jobs" | "-j" => options.jobs = number(value("--jobs")?, "--jobs")? as usize,
            "--shard" => options.shard = Some(parse_shard(&value("--shard")?)?),
            "--only" => options.only.extend(
                value("--only")?
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "--fresh" => options.fresh = true,
            "--no-services" => options.no_services = true,
            "--quiet" | "-q" => options.quiet = true,
            "--pytest-args" => options.pytest_args = Some(value("--pytest-args")?),
            "--tests" => options.tests = Some(value("--tests")?),
            "--install" => options.install = Some(value("--install")?),
            "--timeout" => options.timeout = Some(number(value("--timeout")?, "--timeout")?),
            "--suite-timeout" => {
                options.suite_timeout = Some(number(value("--suite-timeout")?, "--suite-timeout")?)
            }
            "--from" => render_from = Some(PathBuf::from(value("--from")?)),
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option {flag} (see --help)"))
            }
            word if command_word.is_none()
                && positional.is_empty()
                && ["run", "check", "list", "render", "services", "help"].contains(&word) =>
            {
                command_word = Some(word.to_string())
            }
            other => positional.push(other.to_string()),
        }
    }
    if matches!(options.command, Command::Help | Command::Version) {
        return Ok(options);
    }
    options.command = match command_word.as_deref() {
        None | Some("run") => {
            if let Some(extra) = positional.first() {
                return Err(format!("unexpected argument {extra:?} (see --help)"));
            }
            Command::Run
        }
        Some("check") => match positional.as_slice() {
            [path] => Command::Check(PathBuf::from(path)),
            [] => {
                return Err("check needs the project directory: asyncbis-compat check PATH".into())
            }
            _ => return Err(format!("check takes one directory, got {positional:?}")),
        },
        Some("list") => Command::List,
        Some("services") if positional.is_empty() => {
            return Err("services needs names: redis, postgres, memcached".into())
        }
        Some("services") => Command::Services(positional.clone()),
        Some("render") => Command::Render(render_from.ok_or("render needs --from report.json")?),
        Some(_) => Command::Help,
    };
    if matches!(options.command, Command::Check(_)) && options.shard.is_some() {
        return Err("--shard applies to corpus runs, not check".into());
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Options, String> {
        parse_args(
            &line
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn parses_run_options() {
        let o = parse("--corpus=corpus/default.toml --python 3.12 --python 3.13 --jobs 2 --shard 2/4 --only a,b --fresh").unwrap();
        assert_eq!(o.command, Command::Run);
        assert_eq!(o.corpus, "corpus/default.toml");
        assert_eq!(o.pythons, vec!["3.12", "3.13"]);
        assert_eq!((o.jobs, o.shard), (2, Some((2, 4))));
        assert_eq!(o.only, vec!["a", "b"]);
        let kept = parse("--keep-off no-loop-policies,no-task-factory --keep-off no-loop-policies")
            .unwrap();
        assert_eq!(kept.keep_off, vec!["no-loop-policies", "no-task-factory"]);
        assert!(o.fresh);
        assert_eq!(parse("run").unwrap().command, Command::Run);
        assert_eq!(parse("").unwrap().corpus, "quick");
    }

    #[test]
    fn parses_check_and_render() {
        let o = parse("check ./proj --timeout 5").unwrap();
        assert_eq!(o.command, Command::Check(PathBuf::from("./proj")));
        assert_eq!(o.timeout, Some(5));
        let o = parse_args(&[
            "check".into(),
            "p".into(),
            "--pytest-args".into(),
            "-x -k 'a or b'".into(),
        ])
        .unwrap();
        assert_eq!(o.pytest_args.as_deref(), Some("-x -k 'a or b'"));
        assert_eq!(
            parse("check p --tests=tests/unit")
                .unwrap()
                .tests
                .as_deref(),
            Some("tests/unit")
        );
        assert_eq!(
            parse("render --from r.json").unwrap().command,
            Command::Render(PathBuf::from("r.json"))
        );
        assert_eq!(parse("--help").unwrap().command, Command::Help);
        assert_eq!(
            parse("services redis postgres").unwrap().command,
            Command::Services(vec!["redis".into(), "postgres".into()])
        );
    }

    #[test]
    fn rejects_bad_usage() {
        for (line, expected) in [
            ("--jobs 0", "positive"),
            ("--jobs", "needs a value"),
            ("--shard 3/2", "--shard"),
            ("--shard x", "--shard"),
            ("--bogus", "unknown option"),
            ("check", "needs the project directory"),
            ("check a b", "one directory"),
            ("stray", "unexpected argument"),
            ("render", "--from"),
            ("check p --shard 1/2", "corpus runs"),
            ("services", "needs names"),
            ("--keep-off bogus", "unknown switch"),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}

//! Command-line interface (clap, derive): `asyncbis-compat [run] | check | list | render | merge |
//! compare | services`.
//!
//! Clap's parse is turned into [`Options`], the resolved settings the rest of the tool reads.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Where reports go unless `--out` says otherwise (a directory of its own, so a run never
/// overwrites a `report/` directory of the project it is started in).
pub const DEFAULT_OUT: &str = "asyncbis-compat-report";
const DEFAULT_CORPUS: &str = "quick";

#[derive(Debug, Parser)]
#[command(
    name = "asyncbis-compat",
    version,
    about = "How badly do asyncio projects break under asyncbis? Runs their test suites on stock \
             asyncio and under asyncbis and attributes each new failure to a behaviour switch \
             (see docs/switches.md).",
    after_help = "Without a command, `run` is meant: asyncbis-compat --corpus default ...\n\
                  asyncbis comes from --wheel, else --asyncbis-src (built with maturin), else the \
                  asyncbis installed for each --python (packed into a wheel as it is).\n\
                  Exit status: 0 done; 1 some project was not activated, (check) tests newly \
                  fail or (merge) shards are missing; 2 usage or setup error, or reports that do \
                  not belong together (merge, compare).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<CommandArgs>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum CommandArgs {
    /// Study a corpus of PyPI projects (the default command).
    Run(RunArgs),
    /// The same comparison on a local project directory.
    Check(CheckArgs),
    /// Validate a corpus manifest and list its projects.
    List {
        /// Corpus manifest: quick, default (built in) or a path.
        #[arg(long, default_value = DEFAULT_CORPUS, value_name = "FILE|quick|default")]
        corpus: String,
    },
    /// Re-render report.md and report.html from a report.json.
    Render {
        /// The report.json to read.
        #[arg(long, value_name = "REPORT_JSON")]
        from: PathBuf,
        /// Directory to write into.
        #[arg(long, default_value = DEFAULT_OUT, value_name = "DIR")]
        out: PathBuf,
    },
    /// Merge the shard reports of one run (`run --shard I/N`) into the report of the whole run.
    Merge {
        /// A shard's report.json (repeated, one per shard; a merged report counts as its shards).
        #[arg(long = "from", required = true, value_name = "REPORT_JSON")]
        from: Vec<PathBuf>,
        /// Directory to write report.{json,md,html} into.
        #[arg(long, default_value = DEFAULT_OUT, value_name = "DIR")]
        out: PathBuf,
    },
    /// Put the reports of one corpus under different profiles (and Pythons) side by side.
    Compare {
        /// A report.json (repeated, one per profile and Python; merge shards first).
        #[arg(long = "from", required = true, value_name = "REPORT_JSON")]
        from: Vec<PathBuf>,
        /// Directory to write compare.{json,md,html} into.
        #[arg(long, default_value = DEFAULT_OUT, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print a shell completion script (e.g. `asyncbis-compat completions bash > ~/.local/share/bash-completion/completions/asyncbis-compat`).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Start servers (redis, postgres, memcached) on 127.0.0.1 and print their environment.
    Services {
        /// Service names.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Never install or start servers (fails for any that is not running).
        #[arg(long)]
        no_services: bool,
    },
}

/// `run`: which projects, and the options shared with `check`.
#[derive(Debug, Args)]
struct RunArgs {
    /// Corpus manifest: quick, default (built in) or a path.
    #[arg(long, default_value = DEFAULT_CORPUS, value_name = "FILE|quick|default")]
    corpus: String,
    /// Only the I-th of N slices of the corpus (1-based).
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Only these projects (comma-separated or repeated).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    only: Vec<String>,
    /// Apply the corpus's porting patches (`patches = [...]`) before the runs: measures the
    /// port. Without it every project runs as published.
    #[arg(long)]
    ported: bool,
    #[command(flatten)]
    study: StudyArgs,
}

/// Options shared by `run` and `check`.
#[derive(Debug, Args)]
struct StudyArgs {
    /// Interpreter, a version (3.12) or a path; repeatable [default: python3 on PATH].
    #[arg(long = "python", value_name = "VER|PATH")]
    pythons: Vec<String>,
    /// asyncbis wheel to install (repeatable, one per Python) [default: the asyncbis installed
    /// for each --python].
    #[arg(long = "wheel", value_name = "PATH")]
    wheels: Vec<PathBuf>,
    /// Build the asyncbis wheel from this checkout with maturin instead.
    #[arg(long, value_name = "DIR", conflicts_with = "wheels")]
    asyncbis_src: Option<PathBuf>,
    /// Baseline (stock) runs only: no asyncbis needed.
    #[arg(long)]
    stock_only: bool,
    /// Switches off in every asyncbis run (e.g. no-loop-policies, so harnesses keep working and
    /// deeper breakage shows). Comma-separated or repeated.
    #[arg(
        long,
        value_name = "SWITCH",
        value_delimiter = ',',
        value_parser = clap::builder::PossibleValuesParser::new(crate::analysis::SWITCHES.iter().copied()),
        hide_possible_values = true
    )]
    keep_off: Vec<String>,
    /// asyncbis profile of every asyncbis run (ASYNCBIS_PROFILE; docs/switches.md, Profiles);
    /// the probes turn one switch off on top of it.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "seed",
        value_parser = clap::builder::PossibleValuesParser::new(crate::analysis::PROFILES.iter().copied())
    )]
    profile: String,
    /// A switch value on top of the profile in every asyncbis run (ASYNCBIS_SWITCHES), e.g.
    /// root-task-group=unretrieved-next-tick; the probes still turn each switch off. Repeatable.
    #[arg(long = "set", value_name = "SWITCH=VALUE", value_parser = parse_switch_value)]
    set: Vec<String>,
    /// Report directory.
    #[arg(long, default_value = DEFAULT_OUT, value_name = "DIR")]
    out: PathBuf,
    /// Cache directory [default: $ASYNCBIS_COMPAT_CACHE or ~/.cache/asyncbis-compat].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Projects run in parallel.
    #[arg(short = 'j', long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    jobs: u64,
    /// Ignore cached results (they are still rewritten).
    #[arg(long)]
    fresh: bool,
    /// Never install or start servers; skip entries needing them.
    #[arg(long)]
    no_services: bool,
    /// No progress output (also off when stderr is not a terminal).
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The project directory (its tests run as they are, installed with --install).
    #[arg(value_name = "PATH")]
    path: PathBuf,
    #[command(flatten)]
    study: StudyArgs,
    /// pytest options, kept when single tests are rerun.
    #[arg(long, value_name = "STR", allow_hyphen_values = true)]
    pytest_args: Option<String>,
    /// Test paths [default: pytest's own discovery].
    #[arg(long, value_name = "STR")]
    tests: Option<String>,
    /// Extra `uv pip install` arguments [default: ". pytest"].
    #[arg(long, value_name = "STR", allow_hyphen_values = true)]
    install: Option<String>,
    /// Per-test limit in seconds [default: 60].
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Whole-suite limit in seconds [default: 1800].
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    suite_timeout: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run,
    Check(PathBuf),
    List,
    Render(PathBuf),
    Merge(Vec<PathBuf>),
    Compare(Vec<PathBuf>),
    Services(Vec<String>),
    Completions(clap_complete::Shell),
}

/// The resolved settings of one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub command: Command,
    pub corpus: String,
    pub pythons: Vec<String>,
    pub wheels: Vec<PathBuf>,
    pub asyncbis_src: Option<PathBuf>,
    pub stock_only: bool,
    pub keep_off: Vec<String>,
    /// `None`: asyncbis's defaults (the seed profile, whose runs are the plain ones).
    pub profile: Option<String>,
    /// `--set` values, `name=value`, one per switch (the last one given wins).
    pub switch_values: Vec<String>,
    pub out: PathBuf,
    pub cache: Option<PathBuf>,
    pub jobs: usize,
    pub shard: Option<(usize, usize)>,
    pub only: Vec<String>,
    /// `--ported`: the corpus entries' patches are applied (otherwise they are left out).
    pub ported: bool,
    pub fresh: bool,
    pub no_services: bool,
    pub quiet: bool,
    pub pytest_args: Option<String>,
    pub tests: Option<String>,
    pub install: Option<String>,
    pub timeout: Option<u64>,
    pub suite_timeout: Option<u64>,
}

impl Options {
    /// The settings of a command that takes none of the study options.
    fn plain(command: Command) -> Options {
        Options {
            command,
            corpus: DEFAULT_CORPUS.into(),
            pythons: Vec::new(),
            wheels: Vec::new(),
            asyncbis_src: None,
            stock_only: false,
            keep_off: Vec::new(),
            profile: None,
            switch_values: Vec::new(),
            out: PathBuf::from(DEFAULT_OUT),
            cache: None,
            jobs: 1,
            shard: None,
            only: Vec::new(),
            ported: false,
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

    fn study(command: Command, study: StudyArgs) -> Options {
        let mut keep_off: Vec<String> = Vec::new();
        for switch in study.keep_off {
            if !keep_off.contains(&switch) {
                keep_off.push(switch);
            }
        }
        let mut switch_values: Vec<String> = Vec::new();
        for item in study.set {
            let name = item.split('=').next().unwrap_or_default();
            switch_values.retain(|v| v.split('=').next() != Some(name));
            switch_values.push(item);
        }
        Options {
            pythons: study.pythons,
            wheels: study.wheels,
            asyncbis_src: study.asyncbis_src,
            stock_only: study.stock_only,
            keep_off,
            profile: (study.profile != "seed").then_some(study.profile),
            switch_values,
            out: study.out,
            cache: study.cache,
            jobs: study.jobs as usize,
            fresh: study.fresh,
            no_services: study.no_services,
            quiet: study.quiet,
            ..Options::plain(command)
        }
    }

    fn run(run: RunArgs) -> Options {
        Options {
            corpus: run.corpus,
            shard: run.shard,
            only: run.only.into_iter().filter(|s| !s.is_empty()).collect(),
            ported: run.ported,
            ..Options::study(Command::Run, run.study)
        }
    }
}

impl From<Cli> for Options {
    fn from(cli: Cli) -> Options {
        match cli.command {
            None => Options::run(cli.run),
            Some(CommandArgs::Run(run)) => Options::run(run),
            Some(CommandArgs::Check(check)) => Options {
                pytest_args: check.pytest_args,
                tests: check.tests,
                install: check.install,
                timeout: check.timeout,
                suite_timeout: check.suite_timeout,
                ..Options::study(Command::Check(check.path), check.study)
            },
            Some(CommandArgs::List { corpus }) => Options {
                corpus,
                ..Options::plain(Command::List)
            },
            Some(CommandArgs::Render { from, out }) => Options {
                out,
                ..Options::plain(Command::Render(from))
            },
            Some(CommandArgs::Merge { from, out }) => Options {
                out,
                ..Options::plain(Command::Merge(from))
            },
            Some(CommandArgs::Compare { from, out }) => Options {
                out,
                ..Options::plain(Command::Compare(from))
            },
            Some(CommandArgs::Completions { shell }) => Options::plain(Command::Completions(shell)),
            Some(CommandArgs::Services { names, no_services }) => Options {
                no_services,
                ..Options::plain(Command::Services(names))
            },
        }
    }
}

/// `--set SWITCH=VALUE`: a known switch and a value word (asyncbis itself checks the value).
fn parse_switch_value(text: &str) -> Result<String, String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("takes SWITCH=VALUE, not {text:?}"))?;
    if !crate::analysis::SWITCHES.contains(&name) {
        return Err(format!(
            "unknown switch {name:?} (known: {})",
            crate::analysis::SWITCHES.join(", ")
        ));
    }
    let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if value.is_empty() || !value.chars().all(word) {
        return Err(format!(
            "{name}: the value must be a word like on, off, unretrieved; got {value:?}"
        ));
    }
    Ok(format!("{name}={value}"))
}

pub fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("takes I/N with 1 <= I <= N, not {text:?}");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Writes the completion script for `shell` (clap_complete, from the same definition as the parser).
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "asyncbis-compat", out);
}

/// Parses the arguments (without the program name). `Err` carries clap's error, which knows
/// how to print itself and its exit status (0 for --help/--version, 2 for usage errors).
pub fn parse_args<I, T>(args: I) -> Result<Options, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = std::iter::once(std::ffi::OsString::from("asyncbis-compat"))
        .chain(args.into_iter().map(Into::into));
    Cli::try_parse_from(argv).map(Options::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(line: &str) -> Result<Options, clap::Error> {
        parse_args(line.split_whitespace())
    }

    #[test]
    fn completions_cover_the_subcommands_and_options() {
        let o = parse("completions bash").unwrap();
        assert_eq!(o.command, Command::Completions(clap_complete::Shell::Bash));
        assert!(parse("completions tcsh").is_err());
        let mut script = Vec::new();
        write_completions(clap_complete::Shell::Bash, &mut script);
        let script = String::from_utf8(script).unwrap();
        for word in [
            "check",
            "render",
            "merge",
            "compare",
            "--corpus",
            "--profile",
            "--keep-off",
        ] {
            assert!(
                script.contains(word),
                "{word} missing from the bash completions"
            );
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run_options() {
        let o = parse("--corpus=corpus/default.toml --python 3.12 --python 3.13 --jobs 2 --shard 2/4 --only a,b --fresh").unwrap();
        assert_eq!(o.command, Command::Run);
        assert_eq!(o.corpus, "corpus/default.toml");
        assert_eq!(o.pythons, vec!["3.12", "3.13"]);
        assert_eq!((o.jobs, o.shard), (2, Some((2, 4))));
        assert_eq!(o.only, vec!["a", "b"]);
        assert!(o.fresh);
        assert!(!o.ported);
        assert!(parse("run --ported --only sqlalchemy").unwrap().ported);
        assert!(parse("--ported").unwrap().ported);
        let kept = parse("--keep-off no-loop-policies,no-task-factory --keep-off no-loop-policies")
            .unwrap();
        assert_eq!(kept.keep_off, vec!["no-loop-policies", "no-task-factory"]);
        assert_eq!(o.profile, None);
        let profiled = parse("--profile recommended").unwrap();
        assert_eq!(profiled.profile.as_deref(), Some("recommended"));
        // seed is asyncbis's default: no ASYNCBIS_PROFILE, the plain runs' cache entries
        assert_eq!(parse("check p --profile=seed").unwrap().profile, None);
        let set = parse(
            "--set root-task-group=unretrieved --set inline-shield=coroutines \
             --set root-task-group=unretrieved-next-tick",
        )
        .unwrap();
        assert_eq!(
            set.switch_values,
            vec![
                "inline-shield=coroutines",
                "root-task-group=unretrieved-next-tick"
            ]
        );
        let looped = parse("--profile recommended --set structured-exit=loop").unwrap();
        assert_eq!(looped.switch_values, vec!["structured-exit=loop"]);
        let cancelling = parse("--profile recommended --set structured-exit=loop-cancel").unwrap();
        assert_eq!(
            cancelling.switch_values,
            vec!["structured-exit=loop-cancel"]
        );
        assert!(parse("--set nope=on").is_err());
        assert!(parse("--set root-task-group").is_err());
        assert!(parse("--set root-task-group=a,b").is_err());
        let err = parse("--profile fastest").unwrap_err().to_string();
        assert!(err.contains("fastest"), "{err}");
        assert!(
            err.contains("seed, recommended, additive, additive+timeouts"),
            "{err}"
        );
        let run = parse("run -j 3 -q --wheel a.whl --wheel b.whl").unwrap();
        assert_eq!(run.command, Command::Run);
        assert_eq!((run.jobs, run.quiet), (3, true));
        assert_eq!(
            run.wheels,
            vec![PathBuf::from("a.whl"), PathBuf::from("b.whl")]
        );
        let bare = parse("").unwrap();
        assert_eq!(bare.command, Command::Run);
        assert_eq!(bare.corpus, "quick");
        assert_eq!(bare.out, PathBuf::from(DEFAULT_OUT));
        assert_eq!(bare.jobs, 1);
        assert!(parse("--stock-only --corpus quick").unwrap().stock_only);
    }

    #[test]
    fn parses_check_list_render_services() {
        let o = parse("check ./proj --timeout 5 --python 3.12").unwrap();
        assert_eq!(o.command, Command::Check(PathBuf::from("./proj")));
        assert_eq!(o.timeout, Some(5));
        assert_eq!(o.pythons, vec!["3.12"]);
        let o = parse_args(["check", "p", "--pytest-args", "-x -k 'a or b'"]).unwrap();
        assert_eq!(o.pytest_args.as_deref(), Some("-x -k 'a or b'"));
        let o = parse_args(["check", "p", "--install", "-e .[test]"]).unwrap();
        assert_eq!(o.install.as_deref(), Some("-e .[test]"));
        assert_eq!(
            parse("check p --tests=tests/unit")
                .unwrap()
                .tests
                .as_deref(),
            Some("tests/unit")
        );
        let render = parse("render --from r.json --out d").unwrap();
        assert_eq!(render.command, Command::Render(PathBuf::from("r.json")));
        assert_eq!(render.out, PathBuf::from("d"));
        let merge = parse("merge --from a/report.json --from b/report.json --out m").unwrap();
        assert_eq!(
            merge.command,
            Command::Merge(vec!["a/report.json".into(), "b/report.json".into()])
        );
        assert_eq!(merge.out, PathBuf::from("m"));
        let compare = parse("compare --from a.json --from b.json").unwrap();
        assert_eq!(
            compare.command,
            Command::Compare(vec!["a.json".into(), "b.json".into()])
        );
        assert_eq!(compare.out, PathBuf::from(DEFAULT_OUT));
        let list = parse("list --corpus corpus/default.toml").unwrap();
        assert_eq!(
            (list.command, list.corpus.as_str()),
            (Command::List, "corpus/default.toml")
        );
        assert_eq!(
            parse("services redis postgres").unwrap().command,
            Command::Services(vec!["redis".into(), "postgres".into()])
        );
    }

    #[test]
    fn help_and_version_exit_0() {
        for line in [
            "--help",
            "-h",
            "--version",
            "-V",
            "check --help",
            "help",
            "help check",
        ] {
            let err = parse(line).unwrap_err();
            assert_eq!(err.exit_code(), 0, "{line}: {err}");
        }
        let help = parse("--help").unwrap_err().to_string();
        for word in [
            "check",
            "list",
            "render",
            "services",
            "--keep-off",
            "--wheel",
        ] {
            assert!(help.contains(word), "--help lacks {word}");
        }
        let version = parse("--version").unwrap_err().to_string();
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    }

    #[test]
    fn rejects_bad_usage_with_status_2() {
        for (line, expected) in [
            ("--jobs 0", "--jobs"),
            ("--jobs", "--jobs"),
            ("--shard 3/2", "I/N"),
            ("--shard x", "I/N"),
            ("--bogus", "--bogus"),
            ("check", "<PATH>"),
            ("check a b", "unexpected argument"),
            ("stray", "unrecognized subcommand"),
            ("render", "--from"),
            ("merge", "--from"),
            ("compare --out d", "--from"),
            ("merge --from a.json --shard 1/2", "--shard"),
            ("check p --shard 1/2", "--shard"),
            // a local project has no manifest, so no patches to apply
            ("check p --ported", "--ported"),
            ("services", "<NAME>"),
            ("--keep-off bogus", "possible values"),
            ("--wheel a.whl --asyncbis-src .", "cannot be used with"),
            ("check p --timeout 0", "--timeout"),
        ] {
            let err = parse(line).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{line}: {err}");
            let text = err.to_string();
            assert!(text.contains(expected), "{line}: {text}");
        }
    }

    #[test]
    fn misspellings_get_suggestions() {
        let text = parse("chek p").unwrap_err().to_string();
        assert!(text.contains("check"), "{text}");
        let text = parse("--corpuss quick").unwrap_err().to_string();
        assert!(text.contains("--corpus"), "{text}");
        let text = parse("--keep-off no-loop-policy").unwrap_err().to_string();
        assert!(text.contains("no-loop-policies"), "{text}");
    }
}

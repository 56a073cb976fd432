#!/usr/bin/env bash
# The breakage study from a fresh checkout: builds the asyncbis wheel and the asyncbis-compat
# tool, runs the corpus, writes the report. Never writes tracked files unless asked to.
#
#   bash scripts/study.sh                         quick corpus -> report-local/quick-py3.12/
#   CORPUS=default JOBS=2 bash scripts/study.sh   the full default corpus (hours)
#   bash scripts/study.sh --commit-report         regenerate the committed report/quick-py3.12/
#                                                 (needs the pinned Python 3.12.1)
#   bash scripts/study.sh --python 3.13 ...       other arguments go to asyncbis-compat run
#   CORPUS=default bash scripts/study.sh --profile recommended --shard 1/2 --commit-report
#                                                 -> report/default-py3.12-recommended-shard1of2/
#   CORPUS=default bash scripts/study.sh --ported --only sqlalchemy
#                                                 the corpus's ports (patches) applied
#                                                 -> report-local/default-py3.12-ported/
#
# The report directory is <corpus>-py<X.Y>, plus -<profile> for a --profile other than seed,
# -ported for --ported and -shard<I>of<N> for --shard I/N, under report/ (--commit-report) or
# report-local/, so runs under different profiles, ports or shards never overwrite each other. Combine the shards with
# `asyncbis-compat merge --from A/report.json --from B/report.json --out DIR` and put profiles
# side by side with `asyncbis-compat compare --from ... --out DIR`.
#
# Environment: PYTHON (default: pyenv's 3.12.1 when installed, else python3; >= 3.11),
# CORPUS (quick|default|FILE), JOBS (default 2), OUT (report directory),
# ASYNCBIS_COMPAT_CACHE (cache directory, default ~/.cache/asyncbis-compat).
# Reaches PyPI (maturin, uv, the corpus's sdists and test dependencies) and crates.io (cargo).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The committed reports are made with this interpreter (pinned: results differ across
# patch releases of asyncio).
PINNED=3.12.1
CORPUS=${CORPUS:-quick}
JOBS=${JOBS:-2}

COMMIT=0
ARGS=()
PROFILE=seed
PORTED=0
SHARD=""
NEXT=""
for arg in "$@"; do
    # --profile, --ported and --shard go to the tool and name the default report directory.
    case "$NEXT" in
        profile) PROFILE=$arg ;;
        shard) SHARD=$arg ;;
    esac
    NEXT=""
    case "$arg" in
        --commit-report) COMMIT=1; continue ;;
        --profile) NEXT=profile ;;
        --profile=*) PROFILE=${arg#--profile=} ;;
        --ported) PORTED=1 ;;
        --shard) NEXT=shard ;;
        --shard=*) SHARD=${arg#--shard=} ;;
    esac
    ARGS+=("$arg")
done

PYENV_PINNED=""
if command -v pyenv >/dev/null 2>&1; then
    candidate="$(pyenv root)/versions/$PINNED/bin/python"
    [ -x "$candidate" ] && PYENV_PINNED=$candidate
fi
if [ -z "${PYTHON:-}" ]; then
    PYTHON=${PYENV_PINNED:-python3}
fi
if ! command -v "$PYTHON" >/dev/null; then
    echo "study.sh: no $PYTHON on PATH (set PYTHON to a Python >= 3.11)" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "study.sh: $PYTHON is $("$PYTHON" -V 2>&1); asyncbis needs Python >= 3.11" >&2
    exit 2
fi
if ! command -v cargo >/dev/null; then
    echo "study.sh: needs a Rust toolchain (cargo) to build asyncbis and the study tool" >&2
    exit 2
fi
# The real interpreter, not a shim or the tools venv below: the study makes its venvs from it.
REAL_PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
VERSION=$("$REAL_PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
MINOR=${VERSION%.*}

CORPUS_NAME=$(basename "$CORPUS" .toml)
# The report directory's name: report/<corpus>-py3.12[-<profile>][-ported][-shard<I>of<N>].
RUN_NAME=$CORPUS_NAME-py$MINOR
[ "$PROFILE" != seed ] && RUN_NAME=$RUN_NAME-$PROFILE
[ "$PORTED" = 1 ] && RUN_NAME=$RUN_NAME-ported
if [ -n "$SHARD" ]; then
    case "$SHARD" in
        [0-9]*/[0-9]*) RUN_NAME=$RUN_NAME-shard${SHARD%%/*}of${SHARD#*/} ;;
        *) echo "study.sh: --shard takes I/N (e.g. 1/2), not $SHARD" >&2; exit 2 ;;
    esac
fi
if [ "$COMMIT" = 1 ]; then
    if [ "$VERSION" != "$PINNED" ]; then
        echo "study.sh: --commit-report needs Python $PINNED (committed reports are comparable only" \
             "on the pinned interpreter); $PYTHON is $VERSION. Install it (pyenv install $PINNED)" \
             "or set PYTHON to it." >&2
        exit 2
    fi
    OUT=${OUT:-$REPO/report/$RUN_NAME}
else
    OUT=${OUT:-$REPO/report-local/$RUN_NAME}
    if [ "$VERSION" != "$PINNED" ]; then
        echo "study.sh: note: Python $VERSION; the committed reports use $PINNED" >&2
    fi
fi

# maturin and uv live in a private venv so a system Python (PEP 668) is never modified.
TOOLS="$REPO/.cache/study-tools"
if [ ! -x "$TOOLS/bin/maturin" ] || [ ! -x "$TOOLS/bin/uv" ]; then
    echo "study.sh: installing maturin and uv from PyPI into $TOOLS (private to this checkout)" >&2
    if "$PYTHON" -m venv "$TOOLS" 2>/dev/null; then
        "$TOOLS/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
        "$TOOLS/bin/python" -m pip install --quiet "maturin>=1.7,<2" uv
    else
        echo "study.sh: $PYTHON cannot make a venv (on Debian/Ubuntu: apt install python3-venv);" \
             "or put maturin and uv on PATH (e.g. pipx install maturin uv)" >&2
        command -v maturin >/dev/null && command -v uv >/dev/null || exit 2
    fi
fi
export PATH="$TOOLS/bin:$PATH"

echo "study.sh: building the asyncbis wheel for Python $VERSION" >&2
WHEELS="$REPO/target/study-wheels"
rm -rf "$WHEELS"
# A reproducible wheel (fixed zip timestamps): the same sources give the same wheel hash, so a
# rerun of the study finds its asyncbis results in the cache instead of running them again.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
(cd "$REPO" && maturin build --release -i "$REAL_PYTHON" --out "$WHEELS" >&2)
WHEEL=$(ls "$WHEELS"/*.whl | head -n 1)

echo "study.sh: building asyncbis-compat" >&2
(cd "$REPO" && cargo build --release -q -p asyncbis-compat --bin asyncbis-compat)

# The built-in corpora by name (the tool compiles in corpus/*.toml), so the report names the
# corpus, not a path of this machine.
CORPUS_ARG=$CORPUS
case "$CORPUS" in
    quick | default) ;;
    *) [ -f "$REPO/corpus/$CORPUS.toml" ] && CORPUS_ARG="$REPO/corpus/$CORPUS.toml" ;;
esac
echo "study.sh: corpus $CORPUS_ARG, Python $VERSION, report in $OUT" >&2
exec "$REPO/target/release/asyncbis-compat" run \
    --corpus "$CORPUS_ARG" \
    --python "$REAL_PYTHON" \
    --wheel "$WHEEL" \
    --jobs "$JOBS" \
    --out "$OUT" \
    ${ARGS[@]+"${ARGS[@]}"}

#!/usr/bin/env bash
# The breakage study from a fresh checkout: installs the build tools (maturin, uv), builds the
# asyncbis wheel and the asyncbis-compat tool, then runs the corpus and writes report/.
#
#   scripts/study.sh                      quick corpus, report/ (a few minutes)
#   CORPUS=default JOBS=2 scripts/study.sh   the full default corpus
#   scripts/study.sh --python 3.13 ...    extra arguments go to asyncbis-compat
#
# Environment: PYTHON (default python3, must be >= 3.11), CORPUS (quick|default|FILE),
# JOBS (default 2), OUT (default report), ASYNCBIS_COMPAT_CACHE (cache directory).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
CORPUS=${CORPUS:-quick}
JOBS=${JOBS:-2}
OUT=${OUT:-$REPO/report}

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

# maturin and uv live in a private venv so a system Python (PEP 668) is never modified.
TOOLS="$REPO/.cache/study-tools"
if [ ! -x "$TOOLS/bin/maturin" ] || [ ! -x "$TOOLS/bin/uv" ]; then
    echo "study.sh: installing maturin and uv into $TOOLS" >&2
    if "$PYTHON" -m venv "$TOOLS" 2>/dev/null; then
        "$TOOLS/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
        "$TOOLS/bin/python" -m pip install --quiet maturin uv
    else
        # No venv module (Debian without python3-venv): fall back to a user install.
        "$PYTHON" -m pip install --quiet --user maturin uv || "$PYTHON" -m pip install --quiet --user --break-system-packages maturin uv
        mkdir -p "$TOOLS/bin"
        USER_BIN=$("$PYTHON" -c 'import site, os; print(os.path.join(site.USER_BASE, "bin"))')
        ln -sf "$USER_BIN/maturin" "$TOOLS/bin/maturin"
        ln -sf "$USER_BIN/uv" "$TOOLS/bin/uv"
    fi
fi
export PATH="$TOOLS/bin:$PATH"

echo "study.sh: building the asyncbis wheel for $("$REAL_PYTHON" -V 2>&1)" >&2
WHEELS="$REPO/target/study-wheels"
rm -rf "$WHEELS"
# A reproducible wheel (fixed zip timestamps): the same sources give the same wheel hash, so a
# rerun of the study finds its asyncbis results in the cache instead of running them again.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
(cd "$REPO" && maturin build --release -i "$REAL_PYTHON" --out "$WHEELS" >&2)
WHEEL=$(ls "$WHEELS"/*.whl | head -n 1)

echo "study.sh: building asyncbis-compat" >&2
(cd "$REPO" && cargo build --release -q -p asyncbis-compat --bin asyncbis-compat)

CORPUS_ARG=$CORPUS
if [ -f "$REPO/corpus/$CORPUS.toml" ]; then
    CORPUS_ARG="$REPO/corpus/$CORPUS.toml"
fi
exec "$REPO/target/release/asyncbis-compat" run \
    --corpus "$CORPUS_ARG" \
    --python "$REAL_PYTHON" \
    --wheel "$WHEEL" \
    --jobs "$JOBS" \
    --out "$OUT" \
    "$@"

#!/usr/bin/env bash
# Run the asyncbis benchmark suite in its own venv.
#
#   scripts/bench.sh [bench.py options]      e.g. scripts/bench.sh --quick --repeat 1
#
# Environment:
#   PYTHON=python3.12        interpreter to benchmark (any python3 >= 3.11; default python3)
#   BENCH_VENV=DIR           venv location (default .venv-bench/ in the repo)
#   BENCH_SKIP_BUILD=1       do not (re)build asyncbis; benchmark what the venv has
#
# The venv gets maturin, trio, anyio, uvloop and a release build of asyncbis from
# this checkout (maturin build --release into a wheel, then pip install). The
# build is skipped when the sources have not changed since the last one; when it
# fails, the asyncbis rows print n/a and the header says why.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
# cargo's cache for the release build lives beside the venv, so that recreating the
# venv (another PYTHON) does not throw the compiled dependencies away
TARGET="$VENV-target"

log() { printf 'bench.sh: %s\n' "$*" >&2; }

if ! command -v "$PY" >/dev/null 2>&1; then
    log "no interpreter '$PY' on PATH (set PYTHON=...)"
    exit 2
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    log "$PY is $("$PY" -V 2>&1); asyncbis needs Python >= 3.11"
    exit 2
fi

# (re)create the venv when missing or made by another interpreter
want_id="$("$PY" -c 'import sys; print(sys.version.split()[0], sys.base_prefix)')"
if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$VENV/.bench-python" 2>/dev/null)" != "$want_id" ]]; then
    log "creating venv $VENV with $("$PY" -V 2>&1)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    printf '%s\n' "$want_id" >"$VENV/.bench-python"
fi
VPY="$VENV/bin/python"

if ! "$VPY" -m pip install -q --disable-pip-version-check maturin trio anyio uvloop rloop; then
    log "bulk install failed; installing one by one"
    for pkg in maturin trio anyio uvloop rloop; do
        "$VPY" -m pip install -q --disable-pip-version-check "$pkg" || log "could not install $pkg (its rows will print n/a)"
    done
fi

note=""
if [[ "${BENCH_SKIP_BUILD:-0}" == 1 ]]; then
    note="asyncbis not rebuilt (BENCH_SKIP_BUILD=1)"
elif [[ ! -f "$ROOT/pyproject.toml" ]]; then
    note="asyncbis not built: no pyproject.toml in $ROOT yet"
else
    # fingerprint of everything the build reads
    stamp="$(cd "$ROOT" && find pyproject.toml README.md Cargo.toml Cargo.lock crates python corpus \
        -type f ! -path '*/__pycache__/*' ! -name '*.so' ! -name '*.pyc' 2>/dev/null |
        LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
    if [[ "$(cat "$VENV/.bench-asyncbis" 2>/dev/null)" == "$stamp" ]] &&
        "$VPY" -c 'import asyncbis' >/dev/null 2>&1; then
        log "asyncbis unchanged since the last build ($stamp)"
    else
        log "building asyncbis (release) from $ROOT; log in $VENV/build.log"
        rm -rf "$VENV/wheels"
        # own target dir: never disturbs (or waits on) the developers' debug builds
        if (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" "$VENV/bin/maturin" build \
            --release --interpreter "$VPY" --out "$VENV/wheels") >"$VENV/build.log" 2>&1 &&
            "$VPY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
                "$VENV"/wheels/asyncbis-*.whl >>"$VENV/build.log" 2>&1; then
            printf '%s\n' "$stamp" >"$VENV/.bench-asyncbis"
            log "asyncbis built and installed"
        else
            note="asyncbis build failed (see $VENV/build.log): $(grep -m1 -iE 'error' "$VENV/build.log" | cut -c1-160 || true)"
            log "$note"
            # never benchmark a stale build under the new sources' name
            "$VPY" -m pip uninstall -q -y asyncbis >/dev/null 2>&1 || true
            rm -f "$VENV/.bench-asyncbis"
        fi
    fi
fi

export ASYNCBIS_BENCH_NOTE="$note"
exec "$VPY" "$ROOT/benches/bench.py" "$@"

#!/usr/bin/env bash
# AnyIO's own test suite (from the anyio 4.16.0 sdist) on the asyncio and asyncbis backends,
# in one pytest session, then a per-test comparison (scripts/anyio_suite/compare.py).
#
#   bash scripts/anyio_suite.sh [pytest args...]      e.g. -k test_taskgroups -x
#
# Environment:
#   PYTHON                 interpreter with asyncbis installed (default: python3)
#   ANYIO_SUITE_DIR        work directory (default: .cache/anyio-suite in the repository)
#   ANYIO_SUITE_BACKENDS   backends to run (default asyncio,asyncbis; also asyncio+uvloop,
#                          asyncio+eager, trio, asyncbis+uvloop)
#   ANYIO_SUITE_TIMEOUT    seconds for the whole pytest run (default 1800)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WORK=${ANYIO_SUITE_DIR:-$ROOT/.cache/anyio-suite}
VERSION=4.16.0
SRC=$WORK/anyio-$VERSION

if ! "$PY" -c "import asyncbis._core" 2>/dev/null; then
    echo "anyio_suite: $PY cannot import asyncbis; install it first (pip install -e . or" \
         "maturin develop) or point PYTHON at a venv that has it" >&2
    exit 2
fi

mkdir -p "$WORK"
if [ ! -d "$SRC/tests" ]; then
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$WORK" "anyio==$VERSION"
    tar -xzf "$WORK/anyio-$VERSION.tar.gz" -C "$WORK"
fi
# AnyIO's "test" dependency group (pyproject.toml), minus coverage; the exact anyio version
"$PY" -m pip install -q "anyio[trio]==$VERSION" "blockbuster>=1.5.29" "hypothesis>=4.18.2" \
    "psutil>=5.9" "pytest>=9.0" "pytest-mock>=3.14" "pytest-timeout>=2.4.0" \
    "trustme>=1.0.0" "truststore>=0.9.1" "uvloop>=0.22.1"

XML=$WORK/results.xml
cd "$SRC"
set +e
PYTHONPATH="$ROOT/scripts/anyio_suite${PYTHONPATH:+:$PYTHONPATH}" \
    timeout "${ANYIO_SUITE_TIMEOUT:-1800}" "$PY" -m pytest -p asyncbis_anyio_plugin \
    -q -p no:cacheprovider --junitxml="$XML" "$@"
status=$?
set -e
echo "pytest exit status: $status"
"$PY" "$ROOT/scripts/anyio_suite/compare.py" "$XML" "$ROOT/scripts/anyio_suite/known_differences.txt"

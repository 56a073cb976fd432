#!/usr/bin/env bash
# Static checks: Rust formatting and lints, Python lints, and the native module's type stubs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy -q --workspace --all-targets -- -D warnings
venv=.venv-test/check
[[ -x "$venv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q "maturin>=1.7,<2" ruff mypy typing_extensions pytest
"$venv/bin/ruff" check python tests benches examples
"$venv/bin/ruff" format --check python tests benches examples
VIRTUAL_ENV="$PWD/$venv" "$venv/bin/maturin" develop -q
# The stubs must match the compiled module exactly, and type-check as a package.
"$venv/bin/python" -m mypy.stubtest asyncbis._core
"$venv/bin/python" -m mypy --strict python/asyncbis/_core.pyi
echo "checks passed"

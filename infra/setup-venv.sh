#!/usr/bin/env bash
# Creates .venv at the repository root and installs flash-restore with its test extras.
# torch is installed first, pinned to the CPU build that lies on this kind of machine's disk,
# so that no later requirement pulls a multi-GB CUDA build. Idempotent: reruns are quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.flash-restore-installed
want=$(cat pyproject.toml infra/setup-venv.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${FLASH_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
echo "$want" > "$stamp"

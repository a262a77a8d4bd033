#!/usr/bin/env bash
# Train every model from the compact corpus export and measure them, on one GPU, in about 10 minutes.
#
#   bash infra/gpu/train_all.sh            # on the GPU machine, from the repo root ($OUT is set there)
#   AE_STEPS=5 LDM_STEPS=5 SEV_STEPS=5 PRESET=cpu FID_SAMPLES=16 ... bash infra/gpu/train_all.sh /tmp/out   # CPU dry run
#   bash infra/gpu/train_all.sh --collect unet [DEST]    # second device call: the UNet's parts
#   bash infra/gpu/train_all.sh --unpack FETCHED_DIR...  # here: put models/ and docs/ back together
#
# Needs only torch, pyarrow, fsspec, safetensors, torchmetrics, pyyaml, pillow, typer, rich from the image;
# diffusers (and anything else missing) comes as wheels in $WHEELS (infra/gpu/pack_wheels.sh), installed
# offline. Training runs locally (workers = 1) and report-models uses the in-process engine: no Ray.
# Full results go to $RESULTS inside the working tree (kept on a warm machine, resumable: rerunning
# continues every model from its checkpoint); `collect` copies what fits into the output folder.
set -euo pipefail
cd "$(dirname "$0")/../.."

RESULTS=${RESULTS:-out/gpu-results}           # models/ + docs/ + logs/ (ignored by git: /out/)
# ------------------------------------------------------------------ collect GROUP DEST
# A device call returns at most 8 files, 16 MiB each, 64 MiB in all, two folders deep. The trained
# models (preset gpu) are about 15 MB (autoencoder) + 3 × 6 MB (severity) + 64 MB (UNet), so they
# cannot come back in one call: 'report' + 'small' fit in the first (the default), 'unet' needs a
# second call on the still-warm machine (`bash infra/gpu/train_all.sh --collect unet`). Model
# folders travel as tar files split into 15 MiB parts, without training checkpoints.
collect() {
  local GROUP=$1 dest=$2 M="$RESULTS/models"
  mkdir -p "$dest"
  parts() {  # parts NAME FOLDER...: tar the model folders (no checkpoints) into DEST/NAME.tar.part-NN
    local name=$1; shift
    tar -C "$M" --exclude=checkpoint --exclude=ldm/autoencoder -cf - "$@" | split -b 15M -d -a 2 - "$dest/$name.tar.part-"
  }

  case "$GROUP" in
    report)
      for f in models.md ldm_samples.png severity_calibration.png; do
        [ -f "$RESULTS/docs/$f" ] && cp "$RESULTS/docs/$f" "$dest/"
      done
      # docs (with models.json and the samples .npz for FID), logs, and every model's card and configs
      tar -C "$RESULTS" -cf "$dest/report.tar" docs logs \
        $(cd "$RESULTS" && ls -d models/*/MODEL_CARD.md models/*/train_config.yaml models/*/config.json \
          models/*/flash_model.json 2>/dev/null)
      ;;
    small)
      small=()
      for d in autoencoder severity-gaussian_blur severity-inpainting severity-nonlinear_blur; do
        [ -d "$M/$d" ] && small+=("$d")
      done
      parts models-small "${small[@]}"
      ;;
    unet)
      parts models-unet ldm
      ;;
    *) echo "unknown group $GROUP (report | small | unet)" >&2; exit 2 ;;
  esac
  local total count
  total=$(du -cb "$dest"/* | tail -1 | cut -f1)
  count=$(ls "$dest" | wc -l)
  echo "collect $GROUP → $dest: $count files, $((total / 1048576)) MiB"
  if [ "$count" -gt 8 ] || [ "$total" -gt $((64 * 1048576)) ]; then
    echo "WARNING: more than one device call returns (8 files, 64 MiB): collect fewer groups per call" >&2
  fi
}

# ------------------------------------------------------------------ unpack FETCHED_DIR... [-- MODELS DOCS]
# Here, after fetching: reassemble models-*.tar.part-* into MODELS (default models/), restore
# models/ldm/autoencoder as a copy of models/autoencoder (same weights; left out of the transfer),
# extract report.tar's docs into DOCS (default docs/) and the model cards beside the models.
unpack() {
  dirs=(); models=models; docs=docs
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then models=${2:-models}; docs=${3:-docs}; break; fi
    dirs+=("$1"); shift
  done
  mkdir -p "$models" "$docs"
  for name in models-small models-unet; do
    files=()
    for d in "${dirs[@]}"; do for f in "$d"/$name.tar.part-*; do [ -e "$f" ] && files+=("$f"); done; done
    [ ${#files[@]} -gt 0 ] && cat $(printf '%s\n' "${files[@]}" | sort) | tar -C "$models" -xf - && echo "unpacked $name"
  done
  if [ -d "$models/ldm" ] && [ -d "$models/autoencoder" ] && [ ! -e "$models/ldm/autoencoder" ]; then
    mkdir -p "$models/ldm/autoencoder"
    cp "$models/autoencoder/config.json" "$models/autoencoder/diffusion_pytorch_model.safetensors" "$models/ldm/autoencoder/"
  fi
  for d in "${dirs[@]}"; do
    if [ -f "$d/report.tar" ]; then
      tmp=$(mktemp -d); tar -C "$tmp" -xf "$d/report.tar"
      cp -r "$tmp/docs/." "$docs/"
      for card in "$tmp"/models/*/MODEL_CARD.md; do
        [ -e "$card" ] && mkdir -p "$models/$(basename "$(dirname "$card")")" && cp "$card" "$models/$(basename "$(dirname "$card")")/"
      done
      rm -rf "$tmp"; echo "unpacked $d/report.tar → $docs/"
    fi
  done
}

case "${1:-}" in
  --collect) collect "${2:?--collect report|small|unet [DEST]}" "${3:-${OUT:?set OUT or pass DEST}}"; exit 0 ;;
  --unpack) shift; unpack "$@"; exit 0 ;;
esac

DEST=${1:-${OUT:-out/gpu-collect}}           # folder that comes back (the device's $OUT)
WHEELS=${WHEELS:-.whl}
PY=${PYTHON:-python3}
DATA=${DATA:-data/corpus/train}
PHOTOS=${PHOTOS:-dev}
PRESET=${PRESET:-gpu}
# Step budgets from the feasibility probe (H100: AE 21.6, UNet 12.9, severity 44.5 steps/s at the preset batches):
# 3000 AE ≈ 140 s, 3000 UNet ≈ 235 s, 3 × 2000 severity ≈ 135 s, report ≈ 60 s.
AE_STEPS=${AE_STEPS:-3000}
LDM_STEPS=${LDM_STEPS:-3000}
SEV_STEPS=${SEV_STEPS:-2000}
AE_BATCH=${AE_BATCH:-}; LDM_BATCH=${LDM_BATCH:-}; SEV_BATCH=${SEV_BATCH:-}
FID_SAMPLES=${FID_SAMPLES:-500}
SAMPLE_STEPS=${SAMPLE_STEPS:-1000}
SEV_CROPS=${SEV_CROPS:-64}
E2E_CROPS=${E2E_CROPS:-64}
BASELINE_CROPS=${BASELINE_CROPS:-16}
EVAL_CROPS=${EVAL_CROPS:-0}                   # 0 = every dev crop
REPORT_ARGS=${REPORT_ARGS:-}
TRAIN_ARGS=${TRAIN_ARGS:-}                    # more train-* flags, e.g. "--set data.max_items=256" for a CPU dry run
COLLECT=${COLLECT:-report small}              # groups for collect.sh; 'unet' in a second call (size limit)

T0=$(date +%s)
mkdir -p "$RESULTS/logs" "$RESULTS/docs" "$DEST"
TIMES="$RESULTS/logs/timings.txt"
: > "$TIMES"

if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/flash-site "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/flash-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" - <<'PYCHECK'
import importlib, sys
missing = []
for name in ("torch", "diffusers", "typer", "rich", "yaml", "PIL", "pyarrow", "fsspec", "safetensors", "torchmetrics"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{name} ({exc})")
if missing:
    sys.exit("missing Python packages: " + ", ".join(missing) + " — carry them as wheels (infra/gpu/pack_wheels.sh)")
import torch
print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
PYCHECK

CLI=("$PY" -m jobs.cli)
M="$RESULTS/models"

phase() {  # phase NAME command...: run, log to $RESULTS/logs/NAME.log, time; stops the script on failure
  local name=$1; shift
  local t rc
  t=$(date +%s)
  echo "== $name: $*"
  set +e
  "$@" 2>&1 | tee "$RESULTS/logs/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  echo "$name $(( $(date +%s) - t )) s rc=$rc" | tee -a "$TIMES"
  return "$rc"
}
opt() { [ -n "$2" ] && echo "$1 $2" || true; }

phase train-autoencoder "${CLI[@]}" train-autoencoder --preset "$PRESET" --data "$DATA" --output "$M/autoencoder" \
  --max-steps "$AE_STEPS" $(opt --batch-size "$AE_BATCH") $TRAIN_ARGS
phase train-ldm "${CLI[@]}" train-ldm --preset "$PRESET" --autoencoder "$M/autoencoder" --data "$DATA" \
  --output "$M/ldm" --max-steps "$LDM_STEPS" $(opt --batch-size "$LDM_BATCH") $TRAIN_ARGS
for fam in gaussian_blur inpainting nonlinear_blur; do
  phase "train-severity-$fam" "${CLI[@]}" train-severity --preset "$PRESET" --autoencoder "$M/autoencoder" \
    --operator "$fam" --data "$DATA" --output "$M/severity-$fam" --max-steps "$SEV_STEPS" $(opt --batch-size "$SEV_BATCH") $TRAIN_ARGS
done
phase report-models "${CLI[@]}" report-models --models "$M" --photos "$PHOTOS" --output-doc "$RESULTS/docs/models.md" \
  --fid-samples "$FID_SAMPLES" --sample-steps "$SAMPLE_STEPS" --severity-crops "$SEV_CROPS" --crops "$EVAL_CROPS" \
  --e2e-crops "$E2E_CROPS" --baseline-crops "$BASELINE_CROPS" --samples-out "$RESULTS/docs/ldm_samples.npz" $REPORT_ARGS
echo "total $(( $(date +%s) - T0 )) s" | tee -a "$TIMES"

for group in $COLLECT; do
  collect "$group" "$DEST"
done
ls -la "$DEST"

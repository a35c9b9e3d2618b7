#!/usr/bin/env bash
# Validate the simulator against a real Llama-3-8B on one GPU (vidur validate).
#
# Run from the repository root on a machine with one NVIDIA H100/H200 and PyTorch with CUDA,
# after benchmarks/gpu/profile_all.sh (same $OUT) so the Llama-3-8B profile of this GPU exists:
#
#     OUT=/some/dir bash benchmarks/gpu/validate_gpu.sh
#
# Needs python with torch (CUDA), numpy, attrs, cattrs, pyyaml, pluggy, tqdm; matplotlib is
# optional (plots); nothing is installed or downloaded. Where the GPU machine lacks one of the
# pure-python packages (cattrs was missing on the H200 image), run benchmarks/gpu/validate_deps.sh
# on the machine that has them and carry build/gpu_deps along. The profile is looked up, in order, in
# $VIDUR_GPU_WORK (profile_all.sh's work dir), in the tarball $OUT/<device>-Meta-Llama-3-8B.tar.gz
# that profile_all.sh leaves, and in the repository's profiles/; without one the simulated side
# uses the roofline estimator (said in the report). Runtime: about 2-3 minutes (a global
# deadline, VIDUR_VALIDATE_BUDGET, default 220 s, bounds the validation run).
# Writes 3 files to $OUT: validate.log (this log), validate_summary.txt (the error tables) and
# validate.tar.gz (validate/: validation.json, summary.txt, iterations.csv, requests.csv,
# iterations.png, latency_cdf.png, cuda_tests.log; unpack anywhere). Keep iterations.csv in
# benchmarks/results/: benchmarks/rescore_validation.py re-prices its batches with later fits on a CPU.
set -uo pipefail

OUT="${OUT:?set OUT to the output directory}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
BUDGET="${VIDUR_VALIDATE_BUDGET:-220}"
SCENARIO="${VIDUR_VALIDATE_SCENARIO:-scenarios/validate-llama3-8b-gpu.yaml}"
MODEL=meta-llama/Meta-Llama-3-8B
TMP="$(mktemp -d)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# pure-python dependencies missing on the GPU machine come from build/gpu_deps/<package>/ when
# present (make it here with: bash benchmarks/gpu/validate_deps.sh, then carry build/gpu_deps)
for pkg in cattrs attrs yaml pluggy tqdm typing_extensions; do
  if ! "${PYTHON:-python}" -c "import $pkg" 2>/dev/null && [ -d "build/gpu_deps/$pkg" ]; then
    PYTHONPATH="$PYTHONPATH:$PWD/build/gpu_deps/$pkg"
  fi
done
export PYTHONUNBUFFERED=1
export VIDUR_DISABLE_PLUGIN_AUTOLOAD=1
export VIDUR_CACHE_DIR="$TMP/cache"
T0=$(date +%s)
exec > >(tee -a "$OUT/validate.log") 2>&1

echo "== vidur GPU validation $(date -u +%FT%TZ) in $PWD, scenario $SCENARIO"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>/dev/null || true
SKU=$("$PY" - <<'PY'
import sys
try:
    import attrs, cattrs, numpy, pluggy, torch, yaml  # noqa: F401
except ImportError as exc:
    print(f"preflight: missing {exc.name}", file=sys.stderr)
    sys.exit(1)
if not torch.cuda.is_available():
    print("preflight: torch sees no CUDA device", file=sys.stderr)
    sys.exit(1)
from vidur.reference.device import gpu_sku
name = torch.cuda.get_device_name()
print(f"python {sys.version.split()[0]} torch {torch.__version__} cuda {torch.version.cuda} device {name}", file=sys.stderr)
try:
    from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    print("varlen_attn: available", file=sys.stderr)
except Exception as exc:  # noqa: BLE001
    print(f"varlen_attn: unavailable ({exc}); no paged kernel: FlashAttention over slot ranges, else SDPA", file=sys.stderr)
print(gpu_sku(name) or "h100")
PY
) || { echo "== preflight failed"; exit 1; }
echo "== device sku: $SKU"

# find the profile of this GPU: profile_all.sh's work dir, its tarball in $OUT, or the repo
PROFILE_PATH=""
if [ -n "${VIDUR_GPU_WORK:-}" ] && [ -d "${VIDUR_GPU_WORK}" ]; then PROFILE_PATH="$VIDUR_GPU_WORK"; fi
for tarball in "$OUT/$SKU-Meta-Llama-3-8B.tar.gz" "$OUT"/"$SKU"-*Llama-3-8B*.tar.gz; do
  if [ -f "$tarball" ]; then
    mkdir -p "$TMP/unpacked" && tar -xzf "$tarball" -C "$TMP/unpacked" && \
      PROFILE_PATH="${PROFILE_PATH:+$PROFILE_PATH:}$TMP/unpacked/profiles" && echo "== unpacked $tarball"
    break
  fi
done
export VIDUR_PROFILE_PATH="${PROFILE_PATH}${VIDUR_PROFILE_PATH:+:$VIDUR_PROFILE_PATH}"
EST_ARGS=()
if ! "$PY" - "$SKU" "$MODEL" <<'PY'
import sys
from vidur.store.profiles import find_profile
p = find_profile(sys.argv[1], sys.argv[2], 1)
print(f"== profile: {p}" if p else f"== no complete tp1 profile of {sys.argv[2]} on {sys.argv[1]}")
sys.exit(0 if p else 1)
PY
then
  echo "== the simulated side falls back to the roofline estimator"
  EST_ARGS=(--estimator roofline)
fi

# the validation itself (real run ~1 minute + model build, warm-up and graph capture)
REMAIN=$(( BUDGET - ($(date +%s) - T0) ))
[ "$REMAIN" -lt 60 ] && REMAIN=60
timeout "$REMAIN" "$PY" -m vidur.cli validate "$SCENARIO" --device cuda -s cluster.device "$SKU" \
    ${EST_ARGS[@]+"${EST_ARGS[@]}"} --out "$TMP/run" --overwrite --no-progress
STATUS=$?
echo "== vidur validate: exit $STATUS after $(( $(date +%s) - T0 ))s"
if [ "$STATUS" -ne 0 ] && [ ! -f "$TMP/run/validation.json" ]; then
  echo "== retrying eagerly with per-request SDPA attention (no CUDA graphs), 48 requests"
  REMAIN=$(( BUDGET + 60 - ($(date +%s) - T0) ))
  if [ "$REMAIN" -gt 40 ]; then
    timeout "$REMAIN" "$PY" - "$SCENARIO" "$SKU" "$TMP/run" ${EST_ARGS[@]+"${EST_ARGS[@]}"} <<'PY'
import sys
from vidur.scenario import load_scenario
from vidur.validate.compare import format_report
from vidur.validate.run import validate_scenario, write_outputs
scenario, sku, out = sys.argv[1:4]
est = sys.argv[5] if len(sys.argv) > 5 else None
sc = load_scenario(scenario, settings=[("cluster.device", sku), ("workload.num_requests", 48)])
res = validate_scenario(sc, device="cuda", estimator=est, attention="sdpa", cuda_graphs=False)
write_outputs(res, out)
print(format_report(res.report))
PY
    echo "== fallback run: exit $?"
  fi
fi
mkdir -p "$TMP/run"
[ -f "$TMP/run/summary.txt" ] && cp "$TMP/run/summary.txt" "$OUT/validate_summary.txt"

# CUDA code paths of the executor (skipped quietly when pytest is absent), at most 60 s
if "$PY" -c "import pytest" 2>/dev/null; then
  timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_validate_cuda.py > "$TMP/run/cuda_tests.log" 2>&1
  echo "== CUDA executor tests: exit $? ($(tail -1 "$TMP/run/cuda_tests.log"))"
fi
rm -rf "$TMP/validate" && mv "$TMP/run" "$TMP/validate" && tar -czf "$OUT/validate.tar.gz" -C "$TMP" validate
rm -rf "$TMP"
echo "== done in $(( $(date +%s) - T0 ))s; files in $OUT:"; ls -la "$OUT" | grep validate || true

#!/usr/bin/env bash
# Profile Llama-3-8B (TP 1,2,4,8), Llama-2-7B (TP 1) and Llama-3-70B (TP 2,4,8) on one GPU.
#
# Run from the repository root on a machine with one NVIDIA GPU and PyTorch with CUDA:
#
#     OUT=/some/dir bash benchmarks/gpu/profile_all.sh
#     OUT=/some/dir VIDUR_GPU_EXTRA="Qwen/Qwen3-32B:2:60" bash benchmarks/gpu/profile_all.sh   # more models after the set
#
# Needs only python with torch, numpy and attrs (tqdm and pytest optional); nothing is
# downloaded. One layer per TP shard is timed (CUDA events over CUDA-graph replays of
# back-to-back calls, rotated weight copies > L2, bf16), each operator through the function the
# reference executor's layer calls (vidur/reference/layers.py); a layer's eager host launch time is
# measured on the reference executor itself (two layers of the shard; the shard's metadata says
# "launch_method", with the reason when it fell back to the profiler's own layer). A global deadline (default
# 300 s of profiling, VIDUR_GPU_BUDGET) keeps the whole run under 6 minutes; whatever
# is not finished stays resumable. Writes at most 6 files to $OUT:
#   profile_all.log, cuda_tests.log, <device>-<model>.tar.gz (one per model), summary.txt
# Unpack the tarballs at the repository root: they hold profiles/<device>/<org>/<model>/.
set -uo pipefail

OUT="${OUT:?set OUT to the output directory}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
BUDGET="${VIDUR_GPU_BUDGET:-300}"
WORK="${VIDUR_GPU_WORK:-$(mktemp -d)}"  # VIDUR_GPU_WORK=profiles resumes into the repo
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
exec > >(tee -a "$OUT/profile_all.log") 2>&1

echo "== vidur GPU profiling $(date -u +%FT%TZ) in $PWD, work dir $WORK, budget ${BUDGET}s"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
"$PY" - <<'PY' || { echo "preflight failed: need python with torch (CUDA), numpy and attrs"; exit 1; }
import sys
import attrs, numpy, torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(), "bf16", torch.cuda.is_bf16_supported())
try:
    from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    print("varlen_attn: available")
except Exception as exc:
    print("varlen_attn: unavailable:", exc, "(no paged kernel: FlashAttention over slot ranges, else SDPA)")
PY

left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

run_model() {  # model tps share_seconds
  local model="$1" tps="$2" share="$3" rem
  rem=$(left)
  if [ "$rem" -le 10 ]; then echo "== skip $model: out of time"; return; fi
  [ "$share" -gt "$rem" ] && share=$rem
  echo "== $model tp $tps (budget ${share}s, $(left)s left overall)"
  "$PY" -m vidur.profile --model "$model" --device cuda --tp "$tps" --root "$WORK" \
      --time-budget "$share" --no-fit --quiet || echo "== $model: exit status $? (incomplete shards stay resumable)"
}

# priority order; a model's unused share goes to the next (shares are caps on what is left).
# VIDUR_GPU_ONLY=MODEL:TPS profiles just that (benchmarks/gpu/session.sh starts with Llama-3-8B:1).
if [ -n "${VIDUR_GPU_ONLY:-}" ]; then
  run_model "${VIDUR_GPU_ONLY%%:*}" "${VIDUR_GPU_ONLY#*:}" "$BUDGET"
else
  run_model meta-llama/Meta-Llama-3-8B 1,2,4,8 150
  run_model meta-llama/Llama-2-7b-hf 1 45
  run_model meta-llama/Meta-Llama-3-70B 2,4,8 200
fi
# VIDUR_GPU_EXTRA="MODEL:TPS:SECONDS ..." adds models after the set (what time is left goes to them in order)
for spec in ${VIDUR_GPU_EXTRA:-}; do
  IFS=: read -r xm xt xs <<<"$spec"
  run_model "$xm" "$xt" "${xs:-60}"
done

# CUDA code-path tests (skipped quietly when pytest is absent or VIDUR_GPU_SKIP_TESTS=1), at most 30 s
if [ -z "${VIDUR_GPU_SKIP_TESTS:-}" ] && [ "$(left)" -gt -20 ] && "$PY" -c "import pytest" 2>/dev/null; then
  timeout 30 "$PY" -m pytest -q -p no:cacheprovider tests/test_profile_cuda.py > "$OUT/cuda_tests.log" 2>&1
  echo "== CUDA tests: exit $? (see cuda_tests.log)"
fi

# package: one tarball per model, paths relative to the repository root
"$PY" - "$WORK" "$OUT" <<'PY'
import json, sys, tarfile
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
lines = []
for meta in sorted(work.glob("*/*/*/metadata.json")):
    d = meta.parent
    rel = d.relative_to(work)
    m = json.loads(meta.read_text())
    name = f"{rel.parts[0]}-{rel.parts[-1]}.tar.gz"
    with tarfile.open(out / name, "w:gz") as tar:
        tar.add(d, arcname=str(Path("profiles") / rel))
    for tp, s in sorted(m["shards"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"{rel} tp{tp}: complete={s.get('complete')} rows={s.get('rows')} "
                     f"attention={s.get('attention_backend')} passed_over={s.get('attention_passed_over', {})} "
                     f"missing={s.get('missing_points')} "
                     f"graph_fallbacks={s.get('graph_capture_fallbacks')} launch={str(s.get('launch_method'))[:80]!r} "
                     f"errors={s.get('errors', [])}")
(out / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "== done in $(( $(date +%s) - T0 ))s; files in $OUT:"; ls -la "$OUT"

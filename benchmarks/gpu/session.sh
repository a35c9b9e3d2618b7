#!/usr/bin/env bash
# One GPU session in one call: what validation needs first, then the rest of the profile set.
#
#     OUT=/some/dir bash benchmarks/gpu/session.sh      # from the repository root, on a machine with one GPU
#
# 1. profile Llama-3-8B TP1 (the kernel the reference executor will run: see vidur/reference/attention.py);
# 2. vidur validate of Llama-3-8B against that fresh profile (benchmarks/gpu/validate_gpu.sh);
# 3. the rest of the profile set (benchmarks/gpu/profile_all.sh resumes into the same work dir), then the
#    CUDA code-path tests, and the tarballs.
# A global deadline (VIDUR_SESSION_BUDGET, default 540 s) keeps the whole call under the 600 s limit of
# one device call; step budgets are caps on what is left. Carry build/gpu_deps (bash
# benchmarks/gpu/validate_deps.sh here) for validation's pure-python dependencies.
# The whole set (8 shards) may not fit one call: a second call on the same warm machine resumes it,
#     OUT=/some/dir VIDUR_GPU_BUDGET=400 VIDUR_GPU_WORK=/tmp/vidur-gpu-work bash benchmarks/gpu/profile_all.sh
# Afterwards, on this machine: untar $OUT/*.tar.gz at the repository root, `vidur fit` each profile,
# keep validate/iterations.csv under benchmarks/results/ (benchmarks/rescore_validation.py re-prices it).
set -uo pipefail

OUT="${OUT:?set OUT to the output directory}"
mkdir -p "$OUT"
TOTAL="${VIDUR_SESSION_BUDGET:-540}"
T0=$(date +%s)
export VIDUR_GPU_WORK="${VIDUR_GPU_WORK:-/tmp/vidur-gpu-work}"  # fixed: a later call on the same machine resumes
left() { echo $(( TOTAL - ($(date +%s) - T0) )); }
cap() { local want="$1" rem; rem=$(left); [ "$want" -gt "$rem" ] && want=$rem; [ "$want" -lt 0 ] && want=0; echo "$want"; }

echo "== session: work dir $VIDUR_GPU_WORK, budget ${TOTAL}s"
VIDUR_GPU_ONLY=meta-llama/Meta-Llama-3-8B:1 VIDUR_GPU_SKIP_TESTS=1 VIDUR_GPU_BUDGET="$(cap 90)" \
  bash benchmarks/gpu/profile_all.sh
echo "== session: $(left)s left after the TP1 profile"
VIDUR_VALIDATE_BUDGET="$(cap 200)" bash benchmarks/gpu/validate_gpu.sh
echo "== session: $(left)s left after validation"
REST=$(( $(left) - 50 ))  # keep time for the CUDA tests and packaging
if [ "$REST" -gt 20 ]; then
  VIDUR_GPU_BUDGET="$REST" bash benchmarks/gpu/profile_all.sh
else
  echo "== session: no time left for the rest of the profile set"
fi
echo "== session done in $(( $(date +%s) - T0 ))s"

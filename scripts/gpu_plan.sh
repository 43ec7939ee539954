#!/usr/bin/env bash
# The timed GPU plan of benchmarks/README.md in one run: compile side by side, then time one at
# a time, each result written to $OUT as soon as it exists (a run cut short keeps its figures).
#
#   OUT=results bash scripts/gpu_plan.sh            # the plan: official configs, batch 128
#   SMALL=1 OUT=/tmp/plan bash scripts/gpu_plan.sh  # a CPU dry run with tiny sizes
#
# Phase 1 (peers) runs only where .bench/ holds the peer drivers and code (see
# ../shared/bench/README.md). Phase 2 compiles every score-jax program into JAX's persistent
# cache, all configs at once in parallel processes; phase 3 times them one by one from that
# cache, both kernel paths (models/kernels.py) in float32 and bfloat16.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_results}
mkdir -p "$OUT"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}
# Several JAX processes share one GPU while compiling: none may take 75% of it up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export SCORE_JAX_HUGEPAGES=0
PY=${PYTHON:-python3}

if [ "${SMALL:-0}" = 1 ]; then
  BATCH=8
  CONFIGS="configs/bench/ve_ncsnpp_small.py configs/bench/vp_ddpmpp_small.py"
  DEEP=""
  SHRINK=(--config.model.nf=8 --config.model.num_res_blocks=1 --config.model.ch_mult="(1, 2)")
  DTYPES="float32"
else
  BATCH=128
  CONFIGS="configs/ve/cifar10_ncsnpp_continuous.py configs/vp/cifar10_ddpmpp_continuous.py"
  DEEP="configs/ve/cifar10_ncsnpp_deep_continuous.py"
  SHRINK=()
  DTYPES="bfloat16 float32"
fi

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/plan.log"; }

# Phase 1: the peers (no compilation), if their code was carried over in .bench/.
if [ -f .bench/official_pytorch_gpu.py ] && [ "${SMALL:-0}" != 1 ]; then
  export SCORE_SDE_PYTORCH=$PWD/.bench/score_sde_pytorch EDM_CODE=$PWD/.bench/edm
  for cfg in ve/cifar10_ncsnpp_continuous vp/cifar10_ddpmpp_continuous; do
    log "peer: official PyTorch $cfg"
    $PY .bench/official_pytorch_gpu.py --config "$cfg" --batch "$BATCH" \
      --out "$OUT/pytorch_${cfg//\//_}.json" >>"$OUT/plan.log" 2>&1
  done
  for fp16 in "" "--fp16"; do
    log "peer: EDM ncsnpp ve $fp16"
    $PY .bench/edm_gpu.py --arch ncsnpp --precond ve --bench $fp16 --batch "$BATCH" \
      --out "$OUT/edm${fp16:+_fp16}.json" >>"$OUT/plan.log" 2>&1
  done
fi

# One benchmark run: name, then benchmark.py arguments.
bench() {
  local name=$1
  shift
  $PY scripts/benchmark.py --batch "$BATCH" --repeats "${REPEATS:-5}" "${SHRINK[@]}" "$@" \
    --json "$OUT/$name.json" >"$OUT/$name.txt" 2>>"$OUT/plan.log"
}

RUNS=()
for cfg in $CONFIGS; do
  for dtype in $DTYPES; do
    for kernels in xla cpu; do
      base=$(basename "$cfg" .py)
      RUNS+=("${base}_${dtype}_${kernels}|--config $cfg --dtype $dtype --config.model.kernels=$kernels --what train,sample,ode")
    done
  done
done
for cfg in $DEEP; do
  RUNS+=("$(basename "$cfg" .py)_bfloat16_xla|--config $cfg --dtype bfloat16 --config.model.kernels=xla --what train")
done

# Phase 2: compile everything side by side.
log "compiling ${#RUNS[@]} runs in parallel into $JAX_COMPILATION_CACHE_DIR"
for run in "${RUNS[@]}"; do
  name=${run%%|*}
  # shellcheck disable=SC2086
  bench "compile_$name" ${run#*|} --compile_only &
done
wait
log "compiled"

# Phase 3: time one at a time.
for run in "${RUNS[@]}"; do
  name=${run%%|*}
  log "timing $name"
  # shellcheck disable=SC2086
  bench "$name" ${run#*|} || log "FAILED $name (see plan.log)"
done
log "done: $OUT"

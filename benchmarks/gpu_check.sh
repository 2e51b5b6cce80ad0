#!/usr/bin/env bash
# The GPU part of issue 9 in one call (docs/benchmarks.md, "GPU"): the
# machine and versions, then the train-step benchmark against PyTorch on the
# same GPU with the default DCGAN layers and with XLA's own convolution
# gradients (--d.conv=xla, --g.upsample=transpose), float32 and bfloat16.
# Runs from the repository root with the JAX, Flax, Optax and PyTorch
# already installed (nothing is installed; no network needed). Results go to
# $OUT (default /tmp/gan_jax_gpu_check): machine.txt, default.txt,
# xla_layers.txt (each the benchmark's JSON lines and table).
#
#   bash benchmarks/gpu_check.sh
#   CASES=toy STEPS=2 REPEATS=1 EXTRA=--no-torch bash benchmarks/gpu_check.sh  # smoke run
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gan_jax_gpu_check}
CASES=${CASES:-dcgan256,dcgan64px}
STEPS=${STEPS:-50}
REPEATS=${REPEATS:-5}
EXTRA=${EXTRA:-}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  date -u
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  fi
  "$PY" -c 'import jax, flax, optax; print("jax", jax.__version__, jax.devices()); print("flax", flax.__version__, "optax", optax.__version__)'
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1
} 2>&1 | tee "$OUT/machine.txt" || exit 1
bench() {
  # shellcheck disable=SC2086
  "$PY" benchmarks/train_step.py --cases="$CASES" --steps="$STEPS" \
    --repeats="$REPEATS" --compute_dtype=float32,bfloat16 $EXTRA "$@"
}
status=0
bench 2>&1 | tee "$OUT/default.txt" || status=1
bench --set d.conv=xla --set g.upsample=transpose 2>&1 \
  | tee "$OUT/xla_layers.txt" || status=1
exit $status

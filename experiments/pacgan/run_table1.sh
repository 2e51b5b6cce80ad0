#!/usr/bin/env bash
# PacGAN (Lin et al. 2018) Table 1: GAN, PacGAN2, PacGAN3, PacGAN4 on the 2-D
# ring and grid, 10 trials per cell (--num_seeds=10 in one compiled program).
#
# Full protocol (400,000 updates per trial; a GPU is advised):
#   experiments/pacgan/run_table1.sh runs/pacgan_table1
# The shortened CPU runs of docs/results/pacgan_table1.md:
#   DATASETS=ring experiments/pacgan/run_table1.sh runs/pacgan_table1 \
#     --num_steps=2000 --log_every=500 --steps_per_loop=100 --checkpoint_every=1000
#   DATASETS=grid experiments/pacgan/run_table1.sh runs/pacgan_table1 \
#     --num_steps=1000 --log_every=500 --steps_per_loop=100 --checkpoint_every=500
# DATASETS="ring" or "grid" runs one column (e.g. two columns in parallel).
# Then: python experiments/pacgan/summarize.py runs/pacgan_table1
set -euo pipefail
out=${1:-runs/pacgan_table1}
shift || true
cd "$(dirname "$0")/../.."
for ds in ${DATASETS:-ring grid}; do
  for name in gan pacgan2 pacgan3 pacgan4; do
    python -m gan_jax.main --flagfile="experiments/pacgan/${name}_${ds}.flags" \
      --workdir="${out}/${name}_${ds}" --noprogress "$@"
  done
done

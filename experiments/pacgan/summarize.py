"""Mean +- standard error over replicas of PacGAN Table 1-3 style runs.

Usage: python experiments/pacgan/summarize.py [--step=N] RUNS_DIR [RUN ...]

Reads the last record (or the record of step N) of
RUNS_DIR/<run>/metrics.jsonl of each run (default: every subdirectory), takes the per-replica toy metrics (``modes/seed_S``,
``high_quality/seed_S``, ``reverse_kl/seed_S``, written by --num_seeds runs)
and prints one markdown row per run: modes / high-quality % / reverse KL as
mean +- s.e. (sample standard deviation / sqrt(n), as PacGAN's tables), with
the paper's Table 1 cell beside it when the run is one of its cells. Stacked
MNIST runs (records with ``kl``, Tables 2 and 3) give modes / KL instead; a
run directory named like its flagfile (``pacdcgan2_stacked_mnist``) gets the
paper's cell.
"""

import math
import os
import re
import sys

import numpy as np

from gan_jax import writers

# PacGAN (Lin et al. 2018) Table 1: modes / high-quality % / reverse KL.
PAPER = {
    "gan_ring": "6.3±0.5 / 98.2±0.2% / 0.45±0.09",
    "pacgan2_ring": "7.9±0.1 / 95.6±2.0% / 0.07±0.03",
    "pacgan3_ring": "7.8±0.1 / 97.7±0.3% / 0.10±0.02",
    "pacgan4_ring": "7.8±0.1 / 95.9±1.4% / 0.07±0.02",
    "gan_grid": "17.3±0.8 / 94.8±0.7% / 0.70±0.07",
    "pacgan2_grid": "23.8±0.7 / 91.3±0.8% / 0.13±0.04",
    "pacgan3_grid": "24.6±0.4 / 94.2±0.4% / 0.06±0.02",
    "pacgan4_grid": "24.8±0.2 / 93.6±0.6% / 0.04±0.01",
    # Tables 2 and 3 (Stacked MNIST): modes / KL.
    "dcgan_stacked_mnist": "78.9±6.46 / 4.50±0.127 (VEEGAN's run: 99.0 / "
                           "3.40)",
    "pacdcgan2_stacked_mnist": "1000.0±0.00 / 0.06±0.003",
    "dcgan_stacked_mnist_d4": "30.6±20.73 / 5.99±0.42",
    "pacdcgan2_stacked_mnist_d4": "484.5±32.99 / 2.61±0.22",
}


def per_replica(record, name):
  """Values of ``name/seed_S`` in seed order (or ``name`` for one run)."""
  pat = re.compile(re.escape(name) + r"/seed_(\d+)$")
  found = sorted((int(m.group(1)), v) for k, v in record.items()
                 if (m := pat.match(k)))
  if not found and name in record:
    return [float(record[name])]
  return [float(v) for _, v in found]


def mean_se(values, scale=1.0, digits=2):
  x = np.asarray(values, np.float64) * scale
  finite = x[np.isfinite(x)]
  if len(finite) == 0:
    return "inf"
  if len(finite) == 1:
    text = f"{finite[0]:.{digits}f}"  # one trial: no standard error
  else:
    se = finite.std(ddof=1) / math.sqrt(len(finite))
    text = f"{finite.mean():.{digits}f}±{se:.{digits}f}"
  if len(finite) < len(x):
    text += f" ({len(x) - len(finite)} inf)"
  return text


def summarize(workdir, step=None):
  # Skips what a crash leaves (a line cut short, stray bytes).
  records = writers.read_metrics(workdir)
  if step is not None:
    records = [r for r in records if r["step"] == step]
    if not records:
      return None
  # The last record with the evaluation metrics (a run's final record may
  # be a plain log step).
  evaluated = [r for r in records
               if any(k == "modes" or k.startswith("modes/") for k in r)]
  if not evaluated:  # e.g. an MNIST run in the same directory
    return ((records[-1]["step"] if records else 0), 0,
            "no mode metrics (not a toy or Stacked MNIST run)")
  record = evaluated[-1]
  modes = per_replica(record, "modes")
  if per_replica(record, "kl"):  # Stacked MNIST
    kl = per_replica(record, "kl")
    return (record["step"], len(modes),
            f"{mean_se(modes, digits=1)} / {mean_se(kl)}")
  hq = per_replica(record, "high_quality")
  kl = per_replica(record, "reverse_kl")
  cell = (f"{mean_se(modes, digits=1)} / {mean_se(hq, 100, 1)}% / "
          f"{mean_se(kl)}")
  return record["step"], len(modes), cell


def main(argv):
  step = None
  args = []
  usage = "usage: summarize.py [--step=N] RUNS_DIR [RUN ...]"
  for a in argv[1:]:
    if a in ("-h", "--help"):
      print(usage + "\n\n" + __doc__.split("\n\n", 2)[2].strip())
      return
    if a.startswith("-") and not a.startswith("--step="):
      sys.exit(f"error: unknown option {a} ({usage})")
    if a.startswith("--step="):
      try:
        step = int(a.split("=", 1)[1])
      except ValueError:
        sys.exit(f"error: {a}: expected --step=N with a whole number")
    else:
      args.append(a)
  if not args:
    sys.exit(usage)
  root = args[0]
  if not os.path.isdir(root):
    sys.exit(f"error: {root} is not a directory")
  missing = [r for r in args[1:]
             if not os.path.isfile(os.path.join(root, r, "metrics.jsonl"))]
  if missing:
    sys.exit(f"error: no metrics.jsonl in {os.path.join(root, missing[0])}")
  runs = args[1:] or sorted(
      d for d in os.listdir(root)
      if os.path.exists(os.path.join(root, d, "metrics.jsonl")))
  print("| run | steps | trials | ours: modes / HQ / reverse KL (Stacked "
        "MNIST: modes / KL) | paper |")
  print("|---|---|---|---|---|")
  for run in runs:
    row = summarize(os.path.join(root, run), step)
    if row is None:
      continue  # no record at that step (yet)
    at, n, cell = row
    print(f"| {run} | {at} | {n} | {cell} | {PAPER.get(run, '')} |")


if __name__ == "__main__":
  main(sys.argv)

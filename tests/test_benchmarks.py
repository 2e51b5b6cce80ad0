"""The train-step benchmark runs and prints one valid JSON line per case."""

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO

FIELDS = ("case", "compute_dtype", "batch_size", "steps_per_sec",
          "images_per_sec", "flops_per_step", "flops_source",
          "matmul_gflops", "matmul_fraction", "torch_steps_per_sec",
          "ratio_vs_torch", "cpu")


def test_benchmark_prints_json_lines():
  env = dict(os.environ, XLA_FLAGS="")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "train_step.py"),
       "--cases=toy", "--steps=2", "--repeats=1", "--no-torch",
       "--matmul_gflops=100", "--set=d_optimizer.lr=1e-4"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  rows = [json.loads(line) for line in result.stdout.splitlines()
          if line.startswith("{")]
  assert len(rows) == 1, result.stdout
  row = rows[0]
  for field in FIELDS:
    assert field in row, field
  assert row["case"] == "toy" and row["batch_size"] == 100
  assert row["steps_per_sec"] > 0
  assert row["images_per_sec"] == pytest.approx(row["steps_per_sec"] * 100,
                                                rel=1e-2)
  assert row["flops_per_step"] > 0
  assert row["matmul_gflops"] == 100
  assert abs(row["matmul_fraction"] - row["steps_per_sec"]
             * row["flops_per_step"] / 1e11) < 1e-2
  assert row["finite"] and row["state_donated"]
  assert row["ratio_vs_torch"] is None  # --no-torch
  assert row["noisy"] is False and row["torch_matmul_precision"] is None
  # Without PyTorch's counter the FLOPs are XLA's cost analysis.
  assert row["flops_source"] == "xla_cost_analysis"
  assert row["xla_flops_per_step"] == row["flops_per_step"]
  assert row["overrides"] == {"d_optimizer.lr": "0.0001"}
  assert "| toy |" in result.stdout  # the table


@pytest.mark.parametrize("arg, message", [
    ("--torch_device=tpu", "unknown --torch_device 'tpu'"),
    ("--set=d.conv=fast", "--set 'd.conv=fast': value should be one of"),
    ("--set=no_such_flag=1", "expected FLAG=VALUE with a gan_jax flag"),
    # Parsed, then rejected by gan_jax when the case is built.
    ("--set=generator=dcgan", "error: --g.hidden=400: --generator=dcgan does "
     "not take it"),
    ("--matmul_gflops=-5", "--matmul_gflops must be >= 0"),
    ("--matmul_gflops=nan", "--matmul_gflops must be >= 0"),
    # gan_jax.main's config checks (were tracebacks inside the step).
    ("--set=pack=3", "--batch_size=100 must be a positive multiple of 3"),
    ("--set=num_seeds=2", "the benchmark times one replica"),
    ("--cases=", "--cases is empty"),
])
def test_benchmark_rejects_bad_arguments(arg, message):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "train_step.py"),
       "--cases=toy", "--matmul_gflops=100", arg],
      cwd=REPO, env=dict(os.environ, XLA_FLAGS=""), capture_output=True,
      text=True, timeout=120)
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if "error" in l]
  assert len(errors) == 1 and message in errors[0], result.stderr
  assert "usage:" not in result.stderr  # one line, not argparse's usage
  assert "Traceback" not in result.stderr


def test_benchmark_counts_model_flops_with_the_pytorch_reference():
  """With PyTorch installed (an optional extra; skipped in CI) the FLOPs
  are the model's, counted on the reference step; for the toy MLP pair they
  agree with XLA's count of gan_jax's step to a few percent (XLA adds the
  elementwise work)."""
  pytest.importorskip("torch")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "train_step.py"),
       "--cases=toy", "--steps=2", "--repeats=1", "--torch",
       "--matmul_gflops=100"],
      cwd=REPO, env=dict(os.environ, XLA_FLAGS=""), capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  row = [json.loads(line) for line in result.stdout.splitlines()
         if line.startswith("{")][0]
  assert row["flops_source"] == "pytorch_flop_counter"
  assert row["flops_per_step"] == pytest.approx(row["xla_flops_per_step"],
                                                rel=0.05)
  assert row["torch_steps_per_sec"] > 0 and row["ratio_vs_torch"] > 0
  # The identical model on both sides, trained to finite losses.
  assert row["params"] == row["torch_params"] == 890003
  assert row["finite"]
  lo, hi = row["ratio_range"]
  assert lo <= row["ratio_vs_torch"] <= hi
  assert row["noisy"] == (hi > 1.3 * lo)
  assert row["torch_matmul_precision"] == "highest"  # CPU: full float32

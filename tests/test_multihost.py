"""Multi-process training on one machine (jax.distributed over gloo).

Two processes with 2 CPU devices each must train exactly what one process
with 4 devices trains (same global batch, seed and device order), write one
checkpoint that a single process restores, and leave every log, image and
TensorBoard file to process 0.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from helpers import (FAST_COMPILE, REPO, TESTS, assert_one_line_error,
                     fault_env, run_module)

# A BatchNorm-free toy pair (2 processes x 2 devices against 1 x 4: the
# same device count, so per-device statistics would match too).
TINY = ["--flagfile=experiments/quickstart.flags", "--num_steps=6",
        "--log_every=3", "--steps_per_loop=3", "--checkpoint_every=3",
        "--g.hidden=16", "--g.layers=2", "--nog.batchnorm", "--d.hidden=8",
        "--d.layers=2", "--d.pieces=2", "--batch_size=16",
        "--eval.num_samples=200", "--noprogress"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(args, devices, env=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
             f"{FAST_COMPILE}", **(env or {}))
  return subprocess.Popen([sys.executable, "-m", "gan_jax.main", *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _run_all(procs, timeout=240):
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  return outs


def _two_processes(args, workdir, env=None):
  """Processes 0 and 1 of a 2-process job, 2 CPU devices each."""
  port = _free_port()
  return [_launch(args + [f"--workdir={workdir}",
                          f"--coordinator_address=127.0.0.1:{port}",
                          "--num_processes=2", f"--process_id={i}"], 2, env)
          for i in range(2)]


def _run_ok(procs, timeout=240):
  """Waits for ``procs``; each must exit 0. Returns their outputs."""
  outs = _run_all(procs, timeout)
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _error_line(out):
  """The one error line of a process's (merged) output; no traceback."""
  assert "Traceback" not in out, out[-3000:]
  errors = [l for l in out.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, out[-3000:]
  return errors[0]


def _restore(workdir, step):
  """The checkpoint of ``step`` restored in this (single) process."""
  from gan_jax import checkpoint as ckpt_lib
  from gan_jax import flags as flags_lib
  from gan_jax import gan as gan_lib
  from gan_jax import state as state_lib

  def abstract(config):
    cfg = flags_lib.defaults(**{k: v for k, v in config.items()
                                if k in flags_lib.SAFE})
    gan = gan_lib.build(cfg)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shapes = jax.eval_shape(lambda: state_lib.create(gan, cfg.seed))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                       sharding=one), shapes)

  ckpts = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints"),
                               read_only=True)
  state, config, restored = ckpts.restore(abstract, step)
  ckpts.close()
  assert restored == step
  return state, config


def test_two_processes_train_what_one_process_with_four_devices_does(
    tmp_path):
  two, one = tmp_path / "two", tmp_path / "one"
  outs = _run_ok(_two_processes(TINY, two) + [
      _launch(TINY + [f"--workdir={one}"], 4)])
  assert "4 global devices" in outs[0] and "process 1 of 2" in outs[1]
  # Only process 0 reports: the step lines and the summary.
  assert "final (step 6)" in outs[0] and "final (step 6)" not in outs[1]
  assert "step 6/6 |" in outs[0] and "step 6/6 |" not in outs[1]

  # Same parameters and optimizer states, up to float reassociation across
  # the gloo all-reduce.
  s2, config = _restore(two, 6)
  s1, _ = _restore(one, 6)
  assert config["num_steps"] == 6
  assert int(s2.step) == int(s1.step) == 6
  leaves2, leaves1 = jax.tree.leaves(s2), jax.tree.leaves(s1)
  assert len(leaves2) == len(leaves1)
  for a, b in zip(leaves2, leaves1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5,
                               atol=1e-6)
  # The step-3 checkpoint is a whole one too (both processes saved it).
  s2_3, _ = _restore(two, 3)
  assert int(s2_3.step) == 3

  # Process 0 wrote the logs once: one record per logged step, same metrics
  # as the single-process run.
  from gan_jax import writers
  rec2, rec1 = writers.read_metrics(two), writers.read_metrics(one)
  assert [r["step"] for r in rec2] == [3, 6]
  for key in ("d_loss", "g_loss", "modes", "reverse_kl"):
    # float(): metrics.jsonl spells a non-finite reverse KL "inf".
    np.testing.assert_allclose(float(rec2[-1][key]), float(rec1[-1][key]),
                               rtol=1e-4, atol=1e-5)
  assert (two / "flags.txt").exists()
  assert len(os.listdir(two / "tensorboard")) == 1
  # Launch flags are not part of the experiment record.
  flags_txt = (two / "flags.txt").read_text()
  assert "process_id" not in flags_txt and "coordinator" not in flags_txt

  # A truncated newest checkpoint: both processes skip it and resume from
  # the previous one, process 0 moves it aside, training finishes and the
  # metrics pick up from the resumed step, the same as before. (Regression:
  # process 1 kept the moved step in its step list, refused to save it again
  # and left process 0 waiting in a collective.)
  ckpt = two / "checkpoints"
  assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) == [3, 6]
  files = [os.path.join(root, f)
           for root, _, names in os.walk(ckpt / "6" / "state") for f in names]
  victim = max(files, key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)
  outs = _run_ok(_two_processes(TINY + ["--num_steps=9"], two))
  assert "checkpoint at step 6 is unreadable" in outs[0]
  assert "resumed from step 3" in outs[0]
  assert os.path.isdir(str(ckpt) + ".corrupt/6")
  assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())[-1] == 9
  again = writers.read_metrics(two)
  assert [r["step"] for r in again] == [3, 6, 9]
  for key in ("d_loss", "g_loss"):
    assert again[1][key] == rec2[1][key]


def test_partial_launch_flags_are_one_line_errors(tmp_path):
  r = run_module("gan_jax.main", *TINY, f"--workdir={tmp_path}",
                 "--num_processes=2", "--process_id=0")
  assert "coordinator_address" in assert_one_line_error(r)
  # No coordinator at the address: JAX's own timeout aborts the process
  # (a fatal error and a C++ stack trace, after 300 s); now one line.
  r = run_module("gan_jax.main", *TINY, f"--workdir={tmp_path / 'run'}",
                 f"--coordinator_address=127.0.0.1:{_free_port()}",
                 "--num_processes=2", "--process_id=1",
                 "--distributed_timeout=1", timeout=60)
  line = assert_one_line_error(r)
  assert "did not accept a connection within --distributed_timeout=1 s" in (
      line), line
  assert not (tmp_path / "run").exists()


def test_cluster_detection_needs_more_than_one_process():
  from gan_jax import distributed
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
  assert distributed.cluster_environment({**slurm, "SLURM_NTASKS": "2"}) == (
      "slurm")
  assert distributed.cluster_environment({**slurm, "SLURM_NTASKS": "1"}) is (
      None)
  assert distributed.cluster_environment(
      {"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}) == "tpu"
  assert distributed.cluster_environment({"TPU_WORKER_HOSTNAMES": "t0"}) is (
      None)
  assert distributed.cluster_environment({}) is None
  # auto without a cluster does nothing (and touches no backend).
  assert not distributed.initialize("auto", env={})


def test_two_processes_with_image_data_match_one_process(tmp_path):
  """Image data across hosts: each process feeds its devices' part of the
  global MNIST batch (HostInput), and a BatchNorm DCGAN trained by 2
  processes x 2 devices equals 1 process x 4 devices."""
  import pytest  # pylint: disable=g-import-not-at-top
  from gan_jax.data import images  # pylint: disable=g-import-not-at-top
  if images.default_manual_dir("mnist") is None:
    pytest.skip("../shared/data/mnist absent")
  data_dir = str(tmp_path / "tfds")
  images._load.cache_clear()  # pylint: disable=protected-access
  try:
    images.load_arrays("mnist", "train", data_dir=data_dir)
  finally:
    images._load.cache_clear()  # pylint: disable=protected-access
  args = ["--flagfile=experiments/dcgan_mnist.flags", "--g.channels=4",
          "--d.channels=4", "--batch_size=16", "--num_steps=2",
          "--log_every=2", "--steps_per_loop=2", "--checkpoint_every=0",
          "--noprogress", f"--tfds_data_dir={data_dir}"]
  two, one = tmp_path / "two", tmp_path / "one"
  _run_ok(_two_processes(args, two) + [
      _launch(args + [f"--workdir={one}"], 4)], timeout=300)
  from gan_jax import writers  # pylint: disable=g-import-not-at-top
  rec2, rec1 = writers.read_metrics(two), writers.read_metrics(one)
  assert [r["step"] for r in rec2] == [r["step"] for r in rec1] == [2]
  for a, b in zip(rec2, rec1):
    for key in ("d_loss", "g_loss", "d_loss_real", "d_loss_fake"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_process_rows_follow_the_devices_mesh_positions():
  """A process feeds the rows its devices hold, in global order: one block
  per process when the mesh keeps hosts together (CPU, GPU), the rows of
  each of its positions when a mesh interleaves hosts (TPU slices)."""
  from types import SimpleNamespace  # pylint: disable=g-import-not-at-top
  from gan_jax import distributed  # pylint: disable=g-import-not-at-top
  dev = lambda p: SimpleNamespace(process_index=p)  # pylint: disable=unnecessary-lambda-assignment
  blocks = [dev(0), dev(0), dev(1), dev(1)]
  interleaved = [dev(0), dev(1), dev(0), dev(1)]
  assert distributed.process_rows(blocks, 8, 1).tolist() == [4, 5, 6, 7]
  assert distributed.process_rows(interleaved, 8, 0).tolist() == [0, 1, 4, 5]
  assert distributed.process_rows(interleaved, 8, 1).tolist() == [2, 3, 6, 7]
  assert distributed.process_rows(blocks, 8) is None  # one process here
  # The image datasets read exactly those rows of every global batch.
  from gan_jax.data import images  # pylint: disable=g-import-not-at-top
  ds = images.ImageDataset(np.zeros((40, 2, 2, 1), np.uint8),
                           np.arange(40) % 7, 7, seed=3)
  full = ds.batches(1, 2, 1, 8)["label"]
  rows = distributed.process_rows(interleaved, 8, 1)
  part = ds.batches(1, 2, 1, 8, rows=rows)["label"]
  np.testing.assert_array_equal(part, full[..., rows])


def test_a_signal_to_one_process_stops_all_after_the_same_step(tmp_path):
  """SIGTERM to process 1 only (a preemption notice reaching one host):
  both processes stop after the same step with one checkpoint of it, and
  exit 0. (Each used to decide alone: process 1 entered the save while
  process 0 waited in the next step's all-reduce, until killed.)"""
  work = tmp_path / "run"
  args = TINY + ["--num_steps=30", "--checkpoint_every=0",
                 "--extra_modules=faults"]
  procs = _two_processes(args, work, dict(
      PYTHONPATH=TESTS, **fault_env(signal="TERM", signal_at_step=3,
                                    signal_process=1)))
  outs = _run_all(procs, timeout=240)
  # Both exit 143 (128 + SIGTERM), the signal's number carried by the vote.
  assert [p.returncode for p in procs] == [143, 143], outs
  assert "signal 15: saved a checkpoint at step 6" in outs[1], outs[1][-2000:]
  assert ("another process was signalled: saved a checkpoint at step 6"
          in outs[0]), outs[0][-2000:]
  assert _error_line(outs[0]) == (
      "error: stopped by SIGTERM (sent to another process) at step 6 of 30, "
      "its checkpoint saved: rerun the same command to resume")
  ckpt = work / "checkpoints"
  assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) == [6]
  state, _ = _restore(work, 6)
  assert int(state.step) == 6


def test_a_failed_write_of_process_0_stops_all_processes(tmp_path):
  """Process 0 alone writes the logs and pictures; its write failing (here
  samples/ is a file, as a full disk would fail it) used to end process 0
  alone while process 1 waited in the next step's all-reduce until JAX's
  heartbeat timeout. Now both stop at the same step without a save, each
  with one line: process 0's error, and process 1 pointing to it; the
  checkpoints saved before are kept. (The write fails at step 3's log,
  after that boundary's vote: step 6's carries it, step 9's reads it.)"""
  work = tmp_path / "run"
  work.mkdir()
  (work / "samples").write_text("not a directory")
  args = TINY + ["--num_steps=30"]
  procs = _two_processes(args, work)
  outs = _run_all(procs, timeout=240)
  assert [p.returncode for p in procs] == [2, 2], outs
  assert "samples" in _error_line(outs[0])
  assert _error_line(outs[1]).startswith(
      "error: process 0 could not write to the workdir (its stderr says "
      "why); every process stopped at step 9, the checkpoint of step 6 is "
      "kept"), outs[1][-2000:]
  ckpt = work / "checkpoints"
  assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())[-1] == 6
  assert int(_restore(work, 6)[0].step) == 6


def test_a_failed_write_in_the_last_calls_is_agreed_on(tmp_path):
  """The write fails at step 3's log and the run ends at step 6, before the
  vote carrying the failure is read: the processes agree once more after
  the loop, so none exits 0 while process 0 reports the failure."""
  work = tmp_path / "run"
  work.mkdir()
  (work / "samples").write_text("not a directory")
  procs = _two_processes(TINY, work)  # --num_steps=6
  outs = _run_all(procs, timeout=240)
  assert [p.returncode for p in procs] == [2, 2], outs
  assert "samples" in _error_line(outs[0])
  assert "in the run's last steps; every process stopped at step 6" in (
      _error_line(outs[1]))


def test_a_failed_startup_write_of_process_0_stops_all_processes(tmp_path):
  """flags.txt (process 0's) cannot be written: no process trains."""
  work = tmp_path / "run"
  (work / "flags.txt").mkdir(parents=True)
  procs = _two_processes(TINY, work)
  outs = _run_all(procs, timeout=240)
  assert [p.returncode for p in procs] == [2, 2], outs
  assert "flags.txt" in _error_line(outs[0])
  assert "no process started training" in _error_line(outs[1])
  assert not (work / "checkpoints").exists() or not [
      d for d in os.listdir(work / "checkpoints") if d.isdigit()]

"""Checkpoints: exact resume after kill -9 / SIGTERM, corrupt checkpoints,
the NaN guard, the structural-flag check, retention (issue 6).

The CLI tests share one uninterrupted reference run and a persistent XLA
compilation cache, so each further run costs little more than its imports.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import (FAST_COMPILE, REPO, assert_one_line_error,
                     compile_cache_env, fault_env, run_module, tiny_config)

from gan_jax import checkpoint as ckpt_lib
from gan_jax import flags as flags_lib
from gan_jax import writers

TINY = ["--dataset=ring", "--g.hidden=16", "--d.hidden=8", "--g.layers=2",
        "--d.layers=2", "--d.pieces=2", "--batch_size=16",
        "--eval.num_samples=100", "--noprogress"]
# EMA, BatchNorm statistics (pacgan_mlp), two D updates per step, and
# 2-step compiled calls: everything that must survive a restart.
RUN = TINY + ["--num_steps=12", "--steps_per_loop=2", "--log_every=2",
              "--checkpoint_every=4", "--keep_checkpoints=2", "--d_steps=2",
              "--ema.decay=0.9"]
WALL_CLOCK = ("steps_per_sec",)


@pytest.fixture(scope="module", name="env")
def fixture_env(tmp_path_factory):
  return compile_cache_env(tmp_path_factory)


def train(env, workdir, *flags, **faults):
  """A RUN in ``workdir``; ``faults``: tests/faults.py's (signal_at_step=6,
  signal="TERM", nan_at_step=7)."""
  if faults:
    env = {**env, **fault_env(**faults)}
    flags += ("--extra_modules=faults",)
  return run_module("gan_jax.main", *RUN, f"--workdir={workdir}", *flags,
                    env=env)


@pytest.fixture(scope="module", name="reference")
def fixture_reference(tmp_path_factory, env):
  """One uninterrupted run, compared against by every resume test."""
  workdir = tmp_path_factory.mktemp("reference")
  r = train(env, workdir)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


def ckpt_dir(workdir):
  return os.path.join(workdir, "checkpoints")


def steps_of(workdir):
  return ckpt_lib.Checkpoints(ckpt_dir(workdir), read_only=True).steps()


def state_at(workdir, step):
  return ckpt_lib.Checkpoints(ckpt_dir(workdir),
                              read_only=True).read_state(step)


def assert_same_state(workdir, reference, step=12):
  got, want = state_at(workdir, step), state_at(reference, step)
  got_leaves = jax.tree_util.tree_leaves_with_path(got)
  want_leaves = jax.tree_util.tree_leaves_with_path(want)
  assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves]
  assert len(got_leaves) > 10
  for (path, a), (_, b) in zip(got_leaves, want_leaves):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, path
    assert a.tobytes() == b.tobytes(), jax.tree_util.keystr(path)


def metrics_of(workdir):
  return [{k: v for k, v in r.items() if k not in WALL_CLOCK}
          for r in writers.read_metrics(workdir)]


def test_kill9_and_sigterm_at_several_points_resume_bitwise(tmp_path, env,
                                                          reference):
  work = tmp_path / "run"
  # kill -9 after step 6's log line, before any checkpoint past step 4.
  r = train(env, work, signal_at_step=6)
  assert r.returncode == -9, r.stderr[-2000:]
  assert steps_of(work) == [4]
  assert [m["step"] for m in metrics_of(work)] == [2, 4, 6]
  # Resume (changing a safe flag), kill -9 right after starting the async
  # save of step 8: the run restarts from 8 if that save completed, else 4.
  r = train(env, work, "--keep_checkpoints=3", signal_at_step=8)
  assert r.returncode == -9, r.stderr[-2000:]
  assert "resumed from step 4" in r.stderr
  assert steps_of(work)[-1] in (4, 8)
  # SIGTERM (preemption) at step 10: a checkpoint at step 10, one line,
  # exit 143 (128 + SIGTERM: the run is not finished).
  r = train(env, work, signal_at_step=10, signal="TERM")
  assert r.returncode == 143, r.stderr[-2000:]
  assert "saved a checkpoint at step 10, exiting" in r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
      "error: stopped by SIGTERM at step 10 of 12, its checkpoint saved: "
      "rerun the same command to resume")
  assert steps_of(work)[-1] == 10
  assert [m["step"] for m in metrics_of(work)] == [2, 4, 6, 8, 10]
  r = train(env, work)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed from step 10" in r.stderr
  assert_same_state(work, reference)
  assert metrics_of(work) == metrics_of(reference)


def test_cadences_off_the_fused_call_length_resume_bitwise(tmp_path, env):
  """Log and checkpoint steps that are not multiples of --steps_per_loop
  (refused before): the loop cuts its calls at them (lengths 3, 1, 2, 2, 1,
  3 here), and a run killed at step 8 resumes from step 6 onto the same
  calls, ending bit for bit where the uninterrupted run does."""
  cadence = ["--steps_per_loop=4", "--log_every=3", "--checkpoint_every=3",
             "--keep_checkpoints=5"]
  whole = tmp_path / "whole"
  r = train(env, whole, *cadence)
  assert r.returncode == 0, r.stderr[-2000:]
  assert [m["step"] for m in metrics_of(whole)] == [3, 6, 9, 12]
  assert steps_of(whole) == [3, 6, 9, 12]
  work = tmp_path / "run"
  r = train(env, work, *cadence, signal_at_step=8)
  assert r.returncode == -9, r.stderr[-2000:]
  assert steps_of(work) == [3, 6]
  r = train(env, work, *cadence)
  assert r.returncode == 0 and "resumed from step 6" in r.stderr, r.stderr
  assert_same_state(work, whole)
  assert metrics_of(work) == metrics_of(whole)


def test_a_signal_with_the_last_call_lets_the_run_finish(tmp_path, env,
                                                        reference):
  """SIGTERM after the last step: the run is complete, so exit 0 (not 143
  and "rerun to resume"), and its state is the uninterrupted run's."""
  work = tmp_path / "run"
  r = train(env, work, signal_at_step=12, signal="TERM")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "error:" not in r.stderr
  assert steps_of(work)[-1] == 12
  assert_same_state(work, reference)


def largest_file(directory):
  files = [os.path.join(root, f) for root, _, names in os.walk(directory)
           for f in names]
  return max(files, key=os.path.getsize)


def assert_short_warning(text, step, directory):
  """The fallback warning is one line naming the step, its directory and
  a reason, without tensorstore's spec dump (issue 23)."""
  assert "TensorStore details" not in text and "<bound method" not in text
  lines = [l for l in text.splitlines()
           if f"checkpoint at step {step} is unreadable" in l]
  assert len(lines) == 1, text[-3000:]
  line = lines[0]
  assert os.path.join(directory, str(step)) in line, line
  assert len(line) < 600, line
  return line


def test_truncated_latest_checkpoint_falls_back_to_previous(tmp_path, env,
                                                            reference):
  work = tmp_path / "run"
  shutil.copytree(reference, work)
  assert steps_of(work) == [8, 12]
  victim = largest_file(os.path.join(ckpt_dir(work), "12", "state"))
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)
  r = train(env, work)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "checkpoint at step 12 is unreadable" in r.stderr
  assert "falling back to the previous one" in r.stderr
  assert_short_warning(r.stderr, 12, ckpt_dir(work))
  assert "resumed from step 8" in r.stderr
  # The failed restore's other reads, still in flight, stay quiet.
  assert "Traceback" not in r.stderr and "Event loop" not in r.stderr
  assert os.path.isdir(os.path.join(ckpt_dir(work) + ".corrupt", "12"))
  assert_same_state(work, reference)
  assert metrics_of(work) == metrics_of(reference)


def test_ctrl_c_during_a_restore_waits_for_it_and_quarantines_nothing(
    tmp_path, reference):
  # A KeyboardInterrupt inside tensorstore's reads came out as a generic
  # read error: the newest step was taken for corrupt and moved away.
  import signal
  from gan_jax import sample
  work = tmp_path / "run"
  shutil.copytree(reference, work)
  ckpts = ckpt_lib.Checkpoints(ckpt_dir(work))
  read = ckpts._manager.restore  # pylint: disable=protected-access
  calls = []

  def read_hit_by_ctrl_c(step, args):
    calls.append(step)
    try:
      os.kill(os.getpid(), signal.SIGINT)  # lands while the reads run ...
      return read(step, args=args)
    except KeyboardInterrupt as e:  # ... and tensorstore rewraps it
      raise Exception("Encountered error while reading array index") from e

  ckpts._manager.restore = read_hit_by_ctrl_c  # pylint: disable=protected-access
  target = sample.load(str(work))[1]  # the abstract state of the run
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                        target)
  handler = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt):
      ckpts.restore(target, quarantine=True)
  finally:
    signal.signal(signal.SIGINT, handler)
  ckpts.close()
  assert calls and set(calls) == {12}  # no fallback to step 8
  assert steps_of(work) == [8, 12]
  assert not os.path.exists(ckpt_dir(work) + ".corrupt")


def test_no_readable_checkpoint_is_one_error_and_keeps_them(tmp_path, env,
                                                           reference):
  work = tmp_path / "run"
  shutil.copytree(reference, work)
  for step in steps_of(work):
    # Every data file of the state overwritten: orbax's restore fails on the
    # first array while tensorstore still reads the others.
    state_dir = os.path.join(ckpt_dir(work), str(step), "state")
    data = [os.path.join(root, f) for root, _, names in os.walk(state_dir)
            for f in names if os.path.basename(root) == "d"]
    assert data
    for path in data:
      with open(path, "wb") as f:
        f.write(os.urandom(100))
  metrics = metrics_of(work)
  r = train(env, work)
  assert r.returncode == 2, r.stderr[-2000:]
  assert "Traceback" not in r.stderr and "Event loop" not in r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "no readable checkpoint" in errors[0]
  assert errors[0].endswith("; none was moved")
  assert r.stderr.strip().splitlines()[-1] == errors[0]
  # Nothing is moved or deleted (all failing points at a changed model
  # rather than corruption; moved away, a rerun would start over and
  # rewrite metrics.jsonl): a rerun fails the same way.
  assert steps_of(work) == [8, 12]
  assert not os.path.exists(ckpt_dir(work) + ".corrupt")
  assert metrics_of(work) == metrics
  r = train(env, work)
  assert r.returncode == 2 and "no readable checkpoint" in r.stderr
  assert steps_of(work) == [8, 12] and metrics_of(work) == metrics


def test_nan_stops_with_metric_and_step_and_keeps_last_good(tmp_path, env):
  work = tmp_path / "run"
  r = train(env, work, nan_at_step=7)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  line = r.stderr.strip().splitlines()[-1]  # after the run's log lines
  assert line.startswith("error: "), line
  assert "non-finite d_loss at step 7" in line, line
  assert "last good checkpoint (step 4) is kept" in line, line
  assert steps_of(work) == [4]
  restored = state_at(work, 4)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored)
             if np.issubdtype(np.asarray(x).dtype, np.floating))


def test_unknown_best_metric_stops_at_the_first_log_and_keeps_it(tmp_path,
                                                                env):
  # A typo in --best_metric would otherwise train the whole run without
  # ever keeping a best checkpoint.
  work = tmp_path / "run"
  r = train(env, work, "--best_metric=fdi")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  line = r.stderr.strip().splitlines()[-1]
  assert line.startswith("error: --best_metric=fdi is not a logged metric "
                         "(step 2 logged: "), line
  assert "modes" in line and line.endswith(
      "stopped at step 2, its checkpoint is kept"), line
  assert steps_of(work) == [2]
  # A metric that is logged is fine: the best step is kept with the last 2.
  r = train(env, tmp_path / "ok", "--best_metric=d_loss")
  assert r.returncode == 0, r.stderr[-2000:]
  kept = steps_of(tmp_path / "ok")
  best = ckpt_lib.Checkpoints(ckpt_dir(tmp_path / "ok"),
                              read_only=True).best_step()
  assert {8, 12} <= set(kept) and best in kept, (kept, best)
  assert "best_metric" not in r.stderr


def test_structural_flag_change_is_refused(tmp_path, env, reference):
  work = tmp_path / "run"
  shutil.copytree(reference, work)
  r = train(env, work, "--num_steps=16", "--g.hidden=32", "--d_optimizer.lr=0.001")
  line = assert_one_line_error(r)
  assert "cannot resume" in line
  assert "--d_optimizer.lr (was default, now 0.001)" in line
  assert "--g.hidden (was 16, now 32)" in line
  assert "num_steps" not in line  # safe with the constant schedule
  assert steps_of(work) == [8, 12]


def set_schema(workdir, version):
  """Rewrites the config schema of every checkpoint of ``workdir`` (None:
  none recorded, as in runs saved before versions)."""
  for step in steps_of(workdir):
    path = os.path.join(ckpt_dir(workdir), str(step), "config", "metadata")
    with open(path) as f:
      config = json.load(f)
    config.pop(flags_lib.SCHEMA_KEY, None)
    if version is not None:
      config[flags_lib.SCHEMA_KEY] = version
    with open(path, "w") as f:
      json.dump(config, f)


def test_a_run_of_another_config_schema_is_refused_in_one_line(
    tmp_path, env, reference):
  """Resume, gan_jax.sample and gan_jax.evaluate read the schema the
  checkpoint records: the current one samples and evaluates; a run saved
  before versions were recorded, or by another schema, is refused in one
  line naming it, and nothing is trained or moved."""
  work = tmp_path / "run"
  shutil.copytree(reference, work)
  out = tmp_path / "samples.npz"
  sample = ("gan_jax.sample", f"--workdir={work}", "--num=20", f"--out={out}")
  evaluate = ("gan_jax.evaluate", f"--workdir={work}")
  for args in (sample, evaluate):
    r = run_module(*args, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
  assert out.exists() and (work / "eval.json").exists()
  version = flags_lib.SCHEMA_VERSION
  # (sample and evaluate read the checkpoint alike: sample.load.)
  for saved, wrote, tool in (
      (None, "schema 0 (before versions were recorded)", sample),
      (version + 1, f"schema {version + 1}", evaluate)):
    set_schema(work, saved)
    want = (f"error: {work} was written by gan_jax config {wrote}; this "
            f"gan_jax reads schema {version}: train it again, or use the "
            "gan_jax commit that wrote it")
    assert assert_one_line_error(train(env, work, "--num_steps=16")) == want
    assert assert_one_line_error(run_module(*tool, env=env)) == want
  assert steps_of(work) == [8, 12]
  assert metrics_of(work) == metrics_of(reference)


def test_a_finished_run_restarted_trains_nothing_and_keeps_its_record(
    tmp_path, env, reference):
  work = tmp_path / "run"
  shutil.copytree(reference, work)
  flags_txt = (work / "flags.txt").read_text()
  for extra, said in (
      ((), "the run is complete (step 12 of --num_steps=12)"),
      (("--num_steps=8",), "the run is at step 12, past --num_steps=8")):
    r = train(env, work, *extra)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nothing to train: " + said in r.stderr, r.stderr[-2000:]
    assert r.stdout.startswith("final (step 12): "), r.stdout
    assert metrics_of(work) == metrics_of(reference)
    assert steps_of(work) == [8, 12]
    # flags.txt still replays the run that made the checkpoints.
    assert (work / "flags.txt").read_text() == flags_txt


def test_num_steps_is_structural_under_a_decaying_schedule():
  old = tiny_config(num_steps=100)
  assert flags_lib.structural_differences(
      old, tiny_config(num_steps=200, log_every=50)) == []
  old = tiny_config(num_steps=100, lr_schedule="cosine")
  assert flags_lib.structural_differences(
      old, tiny_config(num_steps=200, lr_schedule="cosine")) == ["num_steps"]
  assert flags_lib.structural_differences(
      old, tiny_config(num_steps=100, lr_schedule="cosine",
                       nan_policy="warn")) == []


def test_refusal_names_an_empty_list_flag_none():
  from gan_jax import train  # pylint: disable=import-outside-toplevel
  with pytest.raises(ckpt_lib.UserError,
                     match=r"--penalties \(was none, now r1\)"):
    train.check_resume(flags_lib.config_record(tiny_config()),
                       tiny_config(penalties=("r1",)), "DIR")


def test_sample_cli_flags_are_not_part_of_the_config():
  cfg = tiny_config()
  for name in ("num", "step", "labels", "interpolate"):
    assert name not in flags_lib.SAFE
    assert not any(l.startswith(f"--{name}=") for l in
                   flags_lib.serialize(cfg))


def tree(value):
  return {"w": jnp.full((3, 4), value, jnp.float32),
          "n": jnp.asarray(7, jnp.int32)}


def test_keeps_last_k_plus_best_and_never_saves_nan(tmp_path):
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "c"), keep=2,
                               best_metric="fid", best_mode="min")
  for step, fid in [(1, 5.0), (2, 1.0), (3, 4.0), (4, 3.0), (5, None)]:
    metrics = None if fid is None else {"fid": fid, "other": 0.0}
    assert ckpts.save(step, tree(step), {"x": 1}, metrics=metrics)
  assert not ckpts.save(6, tree(float("nan")), {"x": 1})
  ckpts.wait()
  assert ckpts.steps() == [2, 4, 5]
  assert ckpts.best_step() == 2
  ckpts.close()
  # Read back without gan_jax's target: plain nested arrays.
  again = ckpt_lib.Checkpoints(str(tmp_path / "c"), read_only=True)
  np.testing.assert_array_equal(again.read_state(4)["w"], np.full((3, 4), 4))
  state, config, step = again.restore(ckpt_lib.abstract(tree(0)))
  assert step == 5 and config == {"x": 1}
  np.testing.assert_array_equal(state["w"], np.full((3, 4), 5))


def test_silently_corrupted_bytes_fail_the_checksum(tmp_path):
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "c"), keep=3)
  big = {"w": jnp.arange(4096, dtype=jnp.float32)}
  ckpts.save(1, big, {})
  ckpts.save(2, jax.tree.map(lambda x: x + 1, big), {})
  ckpts.close()
  victim = largest_file(str(tmp_path / "c" / "2" / "state"))
  with open(victim, "r+b") as f:
    f.seek(os.path.getsize(victim) // 2)
    f.write(b"\0" * 8)  # same size: orbax alone reads this back
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "c"), keep=3)
  state, _, step = ckpts.restore(ckpt_lib.abstract(big), quarantine=True)
  assert step == 1
  np.testing.assert_array_equal(state["w"], np.arange(4096))
  assert ckpts.steps() == [1]
  with pytest.raises(ckpt_lib.UserError, match="no checkpoint for step 7"):
    ckpts.restore(ckpt_lib.abstract(big), 7)
  ckpts.close()


def test_fallback_warning_is_one_line_without_the_tensorstore_spec(
    tmp_path, caplog):
  """orbax's read error embeds the repr of tensorstore's spec method over
  dozens of lines; the warning keeps the step, its directory and the
  underlying reason."""
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "c"), keep=3)
  big = {"w": jnp.arange(4096, dtype=jnp.float32)}
  ckpts.save(1, big, {})
  ckpts.save(2, big, {})
  ckpts.close()
  victim = largest_file(str(tmp_path / "c" / "2" / "state"))
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "c"), keep=3)
  with caplog.at_level("WARNING"):
    _, _, step = ckpts.restore(ckpt_lib.abstract(big))
  ckpts.close()
  assert step == 1
  warnings = [r.getMessage() for r in caplog.records
              if "is unreadable" in r.getMessage()]
  assert len(warnings) == 1
  assert "\n" not in warnings[0]
  line = assert_short_warning(warnings[0], 2, str(tmp_path / "c"))
  assert "falling back to the previous one" in line
  # tensorstore's reason (which names the file), not orbax's wrapper.
  assert "Error reading" in line and "Encountered error" not in line, line


def test_has_steps_sees_step_directories_only(tmp_path):
  assert not ckpt_lib.has_steps(str(tmp_path / "missing"))
  (tmp_path / "12.orbax-checkpoint-tmp-3").mkdir()  # a save in flight
  assert not ckpt_lib.has_steps(str(tmp_path))
  (tmp_path / "12").mkdir()
  assert ckpt_lib.has_steps(str(tmp_path))


def test_quarantine_keeps_every_bad_copy_of_a_step(tmp_path):
  """A step moved aside twice (saved again, corrupted again) keeps both
  copies in checkpoints.corrupt/: nothing there is deleted."""
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "checkpoints"))
  for text in ("first", "second"):
    os.makedirs(tmp_path / "checkpoints" / "5")
    (tmp_path / "checkpoints" / "5" / "note").write_text(text)
    ckpts._quarantine([5])  # pylint: disable=protected-access
  ckpts.close()
  corrupt = tmp_path / "checkpoints.corrupt"
  assert sorted(os.listdir(corrupt)) == ["5", "5.1"]
  assert (corrupt / "5" / "note").read_text() == "first"
  assert (corrupt / "5.1" / "note").read_text() == "second"


@pytest.mark.parametrize("error", [
    MemoryError(),
    jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory allocating 4096 bytes")])
def test_running_out_of_memory_while_reading_is_not_corruption(
    tmp_path, monkeypatch, error):
  """Out of memory reading the newest checkpoint is raised as it is: not a
  fallback to the previous step, and nothing is quarantined (the newest is
  intact and the next attempt, with less memory in use, resumes from it)."""
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "c"), keep=3)
  for step in (1, 2):
    ckpts.save(step, tree(step), {"x": 1})
  ckpts.close()
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "c"), keep=3)
  read = ckpts._read  # pylint: disable=protected-access

  def failing_read(step, target):
    if step == 2:
      raise error
    return read(step, target)

  monkeypatch.setattr(ckpts, "_read", failing_read)
  with pytest.raises(type(error)):
    ckpts.restore(ckpt_lib.abstract(tree(0)), quarantine=True)
  assert ckpts.steps() == [1, 2]
  assert not os.path.exists(tmp_path / "c.corrupt")
  monkeypatch.setattr(ckpts, "_read", read)
  _, _, step = ckpts.restore(ckpt_lib.abstract(tree(0)), quarantine=True)
  assert step == 2
  ckpts.close()


def _last_line_is_the_only_error(r, *expected):
  assert r.returncode == 2, r.stderr[-3000:]
  assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1] == errors[0]
  for text in expected:
    assert text in errors[0], errors[0]
  return errors[0]


def test_tensorboard_writes_failing_end_the_run_in_one_line_and_it_resumes(
    tmp_path, env, reference):
  """The TensorBoard events file (the largest file of a tiny run) meets a
  full disk: tensorboardX's writer thread dies, and its queue used to
  block the next log step forever. Now one line, the checkpoints kept, and
  a rerun resumes to the reference's exact records."""
  work = tmp_path / "run"
  r = run_module("gan_jax.main", *RUN, f"--workdir={work}", env=env,
                 max_file_bytes=40_000, timeout=300)
  _last_line_is_the_only_error(r, "writing TensorBoard events failed",
                               "File too large", "are kept")
  kept = steps_of(work)
  assert kept and max(kept) < 12
  r = train(env, work)
  assert r.returncode == 0, r.stderr[-3000:]
  assert metrics_of(work) == metrics_of(reference)
  assert_same_state(work, reference)


def test_a_checkpoint_write_failing_ends_the_run_in_one_line_and_keeps_the_older(
    tmp_path, env):
  """A full disk under a checkpoint save (orbax writes in the background
  and reports at the next save or wait): one line naming the step and the
  steps kept; the half-written step is not taken for a checkpoint, and a
  rerun with room resumes from the last one kept."""
  work = tmp_path / "run"
  wide = ["--g.hidden=128", "--checkpoint_every=2", "--log_every=2"]
  r = train(env, work, *wide, "--num_steps=4")
  assert r.returncode == 0, r.stderr[-3000:]
  assert steps_of(work) == [2, 4]
  r = run_module("gan_jax.main", *RUN, f"--workdir={work}", *wide,
                 "--num_steps=8", env=env, max_file_bytes=40_000,
                 timeout=300)
  # --keep_checkpoints=2: step 2 would go once step 6 is written.
  line = _last_line_is_the_only_error(
      r, "writing the checkpoint of step 6", "File too large",
      "the steps saved before it are kept (2, 4)")
  assert "rerun" in line
  assert steps_of(work) == [2, 4]
  r = train(env, work, *wide, "--num_steps=8")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step 4" in r.stderr
  assert steps_of(work) == [6, 8]
  assert [m["step"] for m in metrics_of(work)] == [2, 4, 6, 8]


FULL_DISK_AT_STEP_4 = '''
import builtins, errno, sys
from gan_jax import main, writers
import tensorboardX.record_writer as rw
full = []
class FullFile:  # write() fails as on a full disk: no file name in the error
  def __init__(self, f):
    self.f = f
  def __enter__(self):
    return self
  def __exit__(self, *exc):
    self.f.close()
  def write(self, data):
    full.append(1)
    raise OSError(errno.ENOSPC, "No space left on device")
def failing_open(path, *args, **kwargs):  # writers.atomic_open's open()
  f = builtins.open(path, *args, **kwargs)
  return FullFile(f) if "step_0000004" in str(path) else f
writers.open = failing_open
write, flush = rw.RecordWriter.write, rw.RecordWriter.flush
def failing(real):
  def call(self, *args):
    if full:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real(self, *args)
  return call
rw.RecordWriter.write, rw.RecordWriter.flush = failing(write), failing(flush)
sys.argv = ["gan_jax.main"] + sys.argv[1:]
main.run()
'''


def test_a_full_disk_under_a_sample_png_is_one_line_with_tensorboard_failing(
    tmp_path, env):
  """The disk fills under a sample image; closing the TensorBoard writer
  then fails too. One line naming the PNG, and no traceback from
  tensorboardX's exit hook (the exit skips the interpreter's teardown)."""
  script = tmp_path / "full_disk.py"
  script.write_text(FULL_DISK_AT_STEP_4)
  work = tmp_path / "run"
  full_env = dict(os.environ, **env, XLA_FLAGS=FAST_COMPILE)
  r = subprocess.run([sys.executable, str(script), *TINY, "--num_steps=6",
                      "--log_every=2", "--steps_per_loop=1",
                      "--checkpoint_every=2", f"--workdir={work}"],
                     cwd=REPO, env=full_env, capture_output=True, text=True,
                     timeout=300)
  _last_line_is_the_only_error(r, "samples/step_0000004.png: No space left "
                               "on device")
  assert steps_of(work) == [2]


def test_a_save_failing_for_another_reason_than_io_keeps_its_traceback(
    tmp_path, monkeypatch):
  """Only file-system failures become the one-line "writing the checkpoint
  ... failed"; anything else from a save is a bug and stays itself."""
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "c"))

  def broken(*args, **kwargs):
    raise KeyError("args_for_item")

  monkeypatch.setattr(ckpts._manager, "save", broken)  # pylint: disable=protected-access
  with pytest.raises(KeyError):
    ckpts.save(1, tree(1), {})
  monkeypatch.undo()
  assert ckpts.save(2, tree(2), {})
  ckpts.close()
  assert ckpt_lib._io_reason(ValueError(  # pylint: disable=protected-access
      "OUT_OF_RANGE: Failed to write 10 bytes to file 11: File too large "
      "[os_error_code='27'] [source locations='{...: true}']")) == (
          "File too large")
  assert ckpt_lib._io_reason(KeyError("x")) is None  # pylint: disable=protected-access


def test_resuming_on_another_device_count_warns(tmp_path, env, reference):
  """The checkpoint records the device count it trained on; per-device
  BatchNorm statistics and dropout draws make a resume on another count
  train on differently, which the run says (and still trains)."""
  work = tmp_path / "run"
  shutil.copytree(reference, work)
  r = run_module("gan_jax.main", *RUN, f"--workdir={work}", "--num_steps=14",
                 env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_"
                      "count=2 " + FAST_COMPILE})
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step 12" in r.stderr
  assert "resuming on 2 devices a run trained on 1" in r.stderr
  assert ckpt_lib.Checkpoints(ckpt_dir(work), read_only=True).read_config(
      14)["mesh_devices"] == 2

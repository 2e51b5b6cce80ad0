"""gan_jax.sweep: spec parsing, running, skipping, resuming, aggregation."""

import csv
import json
import math
import os
import time

import numpy as np
import pytest

from gan_jax.errors import UserError
from helpers import assert_one_line_error, run_module

BINARY_FLAGFILE = "/tmp/gan_jax_test_binary.flags"
TINY_SET = ["num_steps=4", "log_every=2", "steps_per_loop=2",
            "checkpoint_every=2", "g.hidden=16", "g.layers=2", "d.hidden=8",
            "d.layers=2", "d.pieces=2", "batch_size=16",
            "eval.num_samples=200", "g.batchnorm=false"]


def _env(tmp_path):
  # One cache for every run of the module: runs that differ only in --seed
  # (and the eager ops of all of them) compile once.
  return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path.parent / "jax_cache"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PLATFORMS": "cpu"}


def _flagfile(path, sweep_dir, *lines):
  text = ["# A 2x2 learning-rate grid, 2 seeds, tiny nets (test).",
          "--sweep_base=experiments/quickstart.flags",
          f"--sweep_dir={sweep_dir}", "--sweep_workers=2",
          "--sweep_metric=d_loss"]
  text += [f"--sweep_set={s}" for s in TINY_SET] + list(lines)
  path.write_text("\n".join(text) + "\n")
  return f"--flagfile={path}"


# Two axes (one of a single value: still named in the runs), two seeds.
GRID = ["--sweep_grid=g_optimizer.lr:1e-4,1e-3",
        "--sweep_grid=d_optimizer.lr:1e-4", "--sweep_seeds=0,1"]


def test_sweep_runs_aggregates_skips_and_resumes(tmp_path):
  sweep_dir = tmp_path / "sweep"
  flagfile = _flagfile(tmp_path / "lr.flags", sweep_dir, *GRID)

  # Print-only: one command per run, nothing run.
  r = run_module("gan_jax.sweep", flagfile, "--sweep_print_only")
  assert r.returncode == 0, r.stderr[-2000:]
  commands = r.stdout.strip().splitlines()
  assert len(commands) == 4
  assert all(c.startswith("python -m gan_jax.main --flagfile=experiments/"
                          "quickstart.flags") for c in commands)
  assert any("--g_optimizer.lr=1e-3" in c and "--d_optimizer.lr=1e-4" in c and "--seed=1" in c
             and "g_optimizer.lr=1e-3,d_optimizer.lr=1e-4,seed=1" in c for c in commands)
  assert not sweep_dir.exists()

  r = run_module("gan_jax.sweep", flagfile, env=_env(tmp_path))
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  runs = sorted(p.name for p in sweep_dir.iterdir()
                if not p.name.startswith(".") and p.is_dir())
  assert len(runs) == 4 and "g_optimizer.lr=1e-4,d_optimizer.lr=1e-4,seed=0" in runs

  with open(sweep_dir / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4
  assert all(row["status"] == "finished" and row["step"] == "4"
             for row in rows)
  assert {"g_optimizer.lr", "d_optimizer.lr", "seed", "reverse_kl", "modes", "d_loss"} <= set(
      rows[0])
  # The table: 2 groups of 2 seeds, mean ± s.e. computed independently.
  md = (sweep_dir / "results.md").read_text()
  table = [l for l in md.splitlines() if l.startswith("| 1e-")]
  assert len(table) == 2
  group = [float(row["d_loss"]) for row in rows
           if row["g_optimizer.lr"] == "1e-3" and row["d_optimizer.lr"] == "1e-4"]
  mean = np.mean(group)
  se = np.std(group, ddof=1) / math.sqrt(2)
  line = next(l for l in table if l.startswith("| 1e-3 | 1e-4 | 2/2 |"))
  cell = line.split("|")[4].strip()  # d_loss is the first metric
  if se > 0:
    assert cell == f"{mean:.4g} ± {se:.2g}", (cell, group)
  else:
    assert cell.startswith(f"{mean:.4g}"), (cell, group)
  assert (sweep_dir / "d_loss_vs_g_optimizer.lr.png").stat().st_size > 1000

  # Rerun: everything is finished, nothing is launched.
  logs = {n: os.path.getmtime(sweep_dir / n / "train.log") for n in runs}
  t0 = time.time()
  r = run_module("gan_jax.sweep", flagfile, env=_env(tmp_path))
  assert r.returncode == 0, r.stderr[-2000:]
  assert "4 of 4 runs already finished" in r.stdout
  assert time.time() - t0 < 30
  assert logs == {n: os.path.getmtime(sweep_dir / n / "train.log")
                  for n in runs}

  # An interrupted run (killed after its step-2 checkpoint) resumes.
  victim = sweep_dir / "g_optimizer.lr=1e-3,d_optimizer.lr=1e-4,seed=1"
  before = json.loads((victim / "metrics.jsonl").read_text().splitlines()[-1])
  _rewind(victim, to_step=2)
  r = run_module("gan_jax.sweep", flagfile, env=_env(tmp_path))
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  assert "3 of 4 runs already finished" in r.stdout
  assert "g_optimizer.lr=1e-3,d_optimizer.lr=1e-4,seed=1: finished" in r.stdout
  assert "resumed from step 2" in (victim / "train.log").read_text()
  after = json.loads((victim / "metrics.jsonl").read_text().splitlines()[-1])
  assert after["step"] == 4
  np.testing.assert_allclose(after["d_loss"], before["d_loss"], rtol=1e-5)
  others = [n for n in runs if n != victim.name]
  assert all(logs[n] == os.path.getmtime(sweep_dir / n / "train.log")
             for n in others)


def _rewind(workdir, to_step):
  """Makes ``workdir`` look like a run killed just after ``to_step``."""
  import shutil
  ckpt = workdir / "checkpoints"
  for d in ckpt.iterdir():
    if d.name.isdigit() and int(d.name) > to_step:
      shutil.rmtree(d)
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  kept = [l for l in lines if json.loads(l)["step"] <= to_step]
  (workdir / "metrics.jsonl").write_text("\n".join(kept) + "\n")


def test_failed_run_is_reported_and_others_finish(tmp_path):
  sweep_dir = tmp_path / "sweep"
  flagfile = _flagfile(tmp_path / "loss.flags", sweep_dir,
                       "--sweep_grid=loss:nope,ns", "--sweep_seeds=0")
  r = run_module("gan_jax.sweep", flagfile, env=_env(tmp_path))
  assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
  line = assert_one_line_error(r)
  assert "1 of 2 runs failed" in line and "nope" in line
  with open(sweep_dir / "results.csv") as f:
    status = {row["loss"]: row["status"] for row in csv.DictReader(f)}
  assert status["ns"] == "finished"
  assert status["nope"].startswith("failed: error: unknown loss 'nope'")
  assert "loss=nope,seed=0" in (sweep_dir / "results.md").read_text()


@pytest.mark.parametrize("axis, expected", [
    ("--sweep_grid=g_optimizer.lrr:1e-4,1e-3", "--g_optimizer.lrr"),
    ("--sweep_random=nope:uniform:0:1", "--nope"),
    ("--sweep_grid=g_optimizer.lr:fast", "--g_optimizer.lr=fast"),
    ("--sweep_set=workdir=/tmp/x", "--workdir"),
])
def test_bad_axis_fails_before_anything_runs(tmp_path, axis, expected):
  sweep_dir = tmp_path / "sweep"
  r = run_module("gan_jax.sweep", "--sweep_base=experiments/quickstart.flags",
                 f"--sweep_dir={sweep_dir}", axis, "--sweep_seeds=0,1")
  line = assert_one_line_error(r)
  assert expected in line, line
  assert not sweep_dir.exists()


def test_empty_axis_value_is_refused_not_dropped(tmp_path):
  """``g_optimizer.lr:1e-4,,1e-3`` ran 2 settings, the empty one silently dropped
  (issue 23): a typo is one line, before anything runs."""
  sweep_dir = tmp_path / "sweep"
  r = run_module("gan_jax.sweep", "--sweep_base=experiments/quickstart.flags",
                 f"--sweep_dir={sweep_dir}", "--sweep_grid=g_optimizer.lr:1e-4,,1e-3",
                 "--sweep_print_only")
  line = assert_one_line_error(r)
  assert line == ("error: --sweep_grid=g_optimizer.lr:1e-4,,1e-3: empty value in axis "
                  "g_optimizer.lr"), line
  assert not sweep_dir.exists()


def test_vectorized_seeds_launch_one_run(tmp_path):
  r = run_module("gan_jax.sweep", "--sweep_base=experiments/quickstart.flags",
                 f"--sweep_dir={tmp_path}", "--sweep_seeds=0-9",
                 "--sweep_vectorize_seeds", "--sweep_print_only")
  assert r.returncode == 0, r.stderr
  commands = r.stdout.strip().splitlines()
  assert len(commands) == 1
  assert "--seed=0 --num_seeds=10" in commands[0]
  assert f"--workdir={tmp_path}/seed=0-9" in commands[0]


# ----------------------------------------------------------- in-process units
def test_spec_parsing():
  from gan_jax import sweep
  assert sweep.parse_seeds(["0", "3-5"]) == ["0", "3", "4", "5"]
  assert sweep.parse_grid("g_optimizer.lr:1e-4, 1e-3") == ("g_optimizer.lr", ["1e-4", "1e-3"])
  names, a = sweep.parse_random(["d_optimizer.lr:loguniform:1e-5:1e-3",
                                 "pack:int:1:4"], 5, seed=3)
  _, b = sweep.parse_random(["d_optimizer.lr:loguniform:1e-5:1e-3",
                             "pack:int:1:4"], 5, seed=3)
  assert names == ["d_optimizer.lr", "pack"] and a == b and len(a) == 5
  assert all(1e-5 <= float(lr) <= 1e-3 and 1 <= int(p) <= 4 for lr, p in a)
  assert sweep.run_name([("dataset", "a/b c"), ("seed", "1")]) == (
      "dataset=a_b_c,seed=1")
  assert len(sweep.run_name([("x" * 300, "1")])) <= 120
  mean, se = sweep.mean_se([1.0, 2.0, 3.0])
  assert mean == 2.0 and se == pytest.approx(1.0 / math.sqrt(3))


@pytest.mark.parametrize("call, expected", [
    (lambda s: s.parse_grid("g_optimizer.lr:1e-4,-1e-3"), "--g_optimizer.lr=-1e-3: must be >= 0"),
    (lambda s: s.parse_grid("pack:1,0"), "--pack=0: must be >= 1"),
    # Both ends of a random range are checked, not only the low one.
    (lambda s: s.parse_random(["g_optimizer.b1:uniform:0.5:1.5"], 3, seed=0),
     "--g_optimizer.b1=1.5: must be in [0, 1)"),
    (lambda s: s.parse_random(["d_optimizer.lr:loguniform:1e-5:inf"], 3, seed=0),
     "must be a finite number"),
    (lambda s: s.parse_seeds(["0", "3-1"]), "the range '3-1' is empty"),
    # A huge range was listed until memory ran out (OOM kill, no line).
    (lambda s: s.parse_seeds(["0-99999999999"]), "more than 10,000 seeds"),
    (lambda s: s.parse_seeds(["4294967290-4294967300"]),
     "a seed must be in [-2147483648, 4294967295]"),
    (lambda s: s.expand_flags(["--flagfile=experiments/nope.flags"]),
     "Unable to open flagfile"),
    # An override of an axis' flag would be dead: the axis wins.
    (lambda s: s.build("experiments/quickstart.flags", "/tmp/x",
                      grid=["g_optimizer.lr:1e-4,3e-4"], overrides=["g_optimizer.lr=1e-3"]),
     "--g_optimizer.lr is both a sweep axis and a --sweep_set override"),
    (lambda s: s.build("experiments/quickstart.flags", "/tmp/x",
                      seeds=["0-1"], overrides=["seed=3"]),
     "--seed is both a sweep axis and a --sweep_set override"),
    (lambda s: s.build("experiments/quickstart.flags", "/tmp/x",
                      grid=["g_optimizer.lr:1e-4,3e-4"],
                      overrides=["d_optimizer.lr=1e-3", "d_optimizer.lr=1e-4"]),
     "--sweep_set sets --d_optimizer.lr twice"),
    # Flags the sweep sets itself for every run.
    (lambda s: s.build("experiments/quickstart.flags", "/tmp/x",
                      seeds=["0-3"], vectorize_seeds=True,
                      overrides=["num_seeds=2"]),
     "--sweep_vectorize_seeds sets --num_seeds itself"),
    (lambda s: s.build("experiments/quickstart.flags", "/tmp/x",
                      seeds=["0-1"], overrides=["progress=true"]),
     "--sweep_set --progress: the sweep sets it per run"),
    # A uniform draw of an integer flag would give 137.2 steps.
    (lambda s: s.parse_random(["num_steps:uniform:100:200"], 3, seed=0),
     "--num_steps takes integers; use num_steps:int:LOW:HIGH"),
    # int bounds: whole, finite, within int64.
    (lambda s: s.parse_random(["seed:int:0:inf"], 3, seed=0),
     "int needs whole-number bounds"),
    (lambda s: s.parse_random(["seed:int:0:1e19"], 3, seed=0),
     "int needs whole-number bounds"),
    (lambda s: s.parse_random(["seed:int:0:2.5"], 3, seed=0),
     "int needs whole-number bounds"),
    # A flagfile that is not text (absl raises UnicodeDecodeError).
    (lambda s: s.expand_flags(["--flagfile=" + BINARY_FLAGFILE]),
     "is not a text (UTF-8) flagfile"),    # Empty items of every axis kind (an empty grid value was dropped).
    (lambda s: s.parse_grid("g_optimizer.lr:1e-4,1e-3,"),
     "--sweep_grid=g_optimizer.lr:1e-4,1e-3,: empty value in axis g_optimizer.lr"),
    (lambda s: s.parse_grid("g_optimizer.lr:1e-4, ,1e-3"),
     "--sweep_grid=g_optimizer.lr:1e-4, ,1e-3: empty value in axis g_optimizer.lr"),
    (lambda s: s.parse_grid("g_optimizer.lr: "), "empty value in axis g_optimizer.lr"),
    (lambda s: s.parse_random(["g_optimizer.lr:choice:1e-4::1e-3"], 3, seed=0),
     "--sweep_random=g_optimizer.lr:choice:1e-4::1e-3: empty value in axis g_optimizer.lr"),
    (lambda s: s.parse_random(["g_optimizer.lr:choice:1e-4:"], 3, seed=0),
     "empty value in axis g_optimizer.lr"),
    (lambda s: s.parse_random(["g_optimizer.lr:uniform:1e-4:"], 3, seed=0),
     "empty value in axis g_optimizer.lr"),
    # absl's list flag keeps the "" of --sweep_seeds=0,,1.
    (lambda s: s.parse_seeds(["0", "", "1"]),
     "--sweep_seeds=0,,1: empty value"),
    (lambda s: s.parse_seeds(["0", " "]), "empty value"),
])
def test_axis_values_out_of_bounds_are_refused(call, expected):
  from gan_jax import sweep
  with open(BINARY_FLAGFILE, "wb") as f:
    f.write(b"--seed=1\n\xff\xfe\x8d")
  with pytest.raises(UserError) as e:
    call(sweep)
  assert expected in str(e.value)


def test_vectorized_run_records_split_per_seed(tmp_path):
  from gan_jax import sweep
  run = sweep.Run(name="seed=3-4", settings=(("seed", "3-4"),),
                  workdir=str(tmp_path), args=(), num_steps=4, seeds=(3, 4))
  (tmp_path / "metrics.jsonl").write_text(json.dumps(
      {"step": 4, "modes": 5.5, "modes/seed_3": 5.0, "modes/seed_4": 6.0})
      + "\n")
  rows = sweep.run_records(run)
  assert [(s["seed"], m["modes"], m["step"]) for s, m in rows] == [
      ("3", 5.0, 4), ("4", 6.0, 4)]


def test_hex_num_steps_and_a_plot_without_finite_values(tmp_path):
  """num_steps as absl parses it (0x10 = 16); a metric that is inf in every
  run gives no plot instead of failing after the results are written."""
  from gan_jax import sweep
  sw = sweep.build("experiments/quickstart.flags", str(tmp_path),
                   grid=["num_steps:0x10,20"])
  assert [r.num_steps for r in sw.runs] == [16, 20]
  rows = [(r.name, dict(r.settings), "done", "", {"reverse_kl": math.inf})
          for r in sw.runs]
  assert sweep.plot(sw, rows, "reverse_kl", None) is None
  rows[0][4]["reverse_kl"] = 0.5
  assert os.path.exists(sweep.plot(sw, rows, "reverse_kl", None))


def test_a_run_whose_workdir_is_a_file_fails_alone(tmp_path):
  """An OSError setting up one run (its workdir is a file) marks that run
  failed, as a failed training would, instead of escaping from the worker
  while the other runs keep training."""
  from gan_jax import sweep
  sw = sweep.build("experiments/quickstart.flags", str(tmp_path),
                   grid=["g_optimizer.lr:1e-4"])
  (run,) = sw.runs
  os.makedirs(os.path.dirname(run.workdir), exist_ok=True)
  with open(run.workdir, "w") as f:
    f.write("not a directory")
  import io  # pylint: disable=g-import-not-at-top
  statuses = sweep.execute(sw.runs, 1, out=io.StringIO())
  status, detail = statuses[run.name]
  assert status == "failed" and "exists and is not a directory" in detail


def test_a_finished_run_with_other_settings_is_not_skipped_as_done(tmp_path):
  """Rerunning a sweep whose fixed settings changed: a trial's workdir that
  holds a finished run of the old settings is reported (gan_jax.main would
  refuse to resume it), not skipped with its stale numbers in the table."""
  import io  # pylint: disable=g-import-not-at-top
  from gan_jax import sweep
  sw = sweep.build("experiments/quickstart.flags", str(tmp_path),
                   grid=["g_optimizer.lr:1e-4"], overrides=["g.hidden=32", "num_steps=4"])
  (run,) = sw.runs
  os.makedirs(run.workdir)
  with open(os.path.join(run.workdir, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 4, "d_loss": 1.0}) + "\n")
  flags_txt = os.path.join(run.workdir, "flags.txt")
  same = sweep.typed_config(run.args)
  from gan_jax import flags as flags_lib  # pylint: disable=g-import-not-at-top
  with open(flags_txt, "w") as f:
    f.write("\n".join(flags_lib.flagfile_lines(same)) + "\n")
  out = io.StringIO()
  assert sweep.execute(sw.runs, 1, out=out)[run.name] == (
      "skipped", "already finished")
  with open(flags_txt, "w") as f:
    f.write("\n".join(flags_lib.flagfile_lines(
        same.replace(**{"g.hidden": 16}))) + "\n")
  status, detail = sweep.execute(sw.runs, 1, out=out)[run.name]
  assert status == "failed"
  assert "--g.hidden (was 16, now 32)" in detail and run.workdir in detail
  # A safe flag (logging) differing is no reason.
  with open(flags_txt, "w") as f:
    f.write("\n".join(flags_lib.flagfile_lines(same.replace(log_every=1)))
            + "\n")
  assert sweep.execute(sw.runs, 1, out=out)[run.name][0] == "skipped"
  # A flags.txt from before config schema versions (no schema line), even
  # of the same settings: the schema that wrote it, in one line.
  with open(flags_txt, "w") as f:
    f.write("\n".join(flags_lib.serialize(same)) + "\n")
  status, detail = sweep.execute(sw.runs, 1, out=out)[run.name]
  assert status == "failed" and detail == (
      f"{run.workdir} was written by gan_jax config schema 0 (before "
      f"versions were recorded); this gan_jax reads schema "
      f"{flags_lib.SCHEMA_VERSION}: use another --sweep_dir or remove it")
  # A value the flag no longer accepts: reported, not a traceback.
  with open(flags_txt, "w") as f:
    f.write(f"{flags_lib.flagfile_lines(same)[0]}\n--d.pool=max\n")
  status, detail = sweep.execute(sw.runs, 1, out=out)[run.name]
  assert status == "failed" and "cannot be read as flags" in detail


def test_a_failed_attempt_reports_its_own_error_not_an_earlier_one(tmp_path):
  """train.log is appended across attempts: the error line is looked for
  in this attempt's part, and a run killed by a signal says so."""
  from gan_jax import sweep
  log = tmp_path / "train.log"
  log.write_text("# attempt 1\nerror: --workdir=x is in use by another run\n")
  offset = log.stat().st_size
  with open(log, "a") as f:
    f.write("# attempt 2\nI1201 step 2/10 | d_loss 1.0\n")
  assert sweep.error_line(str(log), -9, offset) == (
      "killed by SIGKILL (last line: I1201 step 2/10 | d_loss 1.0)")
  assert sweep.error_line(str(log), 1, 0).startswith("error: --workdir=x")
  with open(log, "a") as f:
    f.write("error: unknown loss 'nope'\n")
  assert sweep.error_line(str(log), 1, offset) == "error: unknown loss 'nope'"

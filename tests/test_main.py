"""The command line: the quickstart end to end, and bad input."""

import json
import os

import pytest

from helpers import assert_one_line_error, run_module

from gan_jax import writers


def test_quickstart_end_to_end_writes_every_artifact(tmp_path):
  workdir = tmp_path / "qs"
  r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                 f"--workdir={workdir}", "--num_steps=40", "--log_every=20",
                 "--steps_per_loop=20", "--eval.num_samples=500")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "final (step 40)" in r.stdout and "modes=" in r.stdout
  # flags.txt replays the run.
  flags_txt = (workdir / "flags.txt").read_text()
  assert "--dataset=ring" in flags_txt and "--num_steps=40" in flags_txt
  records = [json.loads(l) for l in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r_["step"] for r_ in records] == [20, 40]
  for key in ("d_loss", "d_loss_real", "d_loss_fake", "g_loss",
              "d_grad_norm", "g_grad_norm", "modes", "high_quality",
              "reverse_kl", "steps_per_sec"):
    assert key in records[-1], key
  assert os.listdir(workdir / "tensorboard")
  assert (workdir / "samples" / "step_0000040.png").stat().st_size > 1000
  # The evaluate CLI on the final checkpoint writes the toy metrics.
  r3 = run_module("gan_jax.evaluate", f"--workdir={workdir}")
  assert r3.returncode == 0, r3.stderr[-2000:]
  def strict(constant):  # JSON has no Infinity / NaN
    raise ValueError(f"non-standard JSON constant {constant}")
  result = json.loads((workdir / "eval.json").read_text(),
                      parse_constant=strict)
  assert result["step"] == 40 and result["num_samples"] == 500
  for key in ("modes", "high_quality", "reverse_kl"):
    assert key in result and key in r3.stdout
    # The same samples as the run's own evaluation of its last step.
    assert result[key] == pytest.approx(records[-1][key], rel=1e-6), key
  # The protocol behind the numbers (PacGAN's ring: 8 modes, std 0.01).
  assert result["settings"] == {
      "features": "samples", "num_modes": 8,
      "mode_std": [pytest.approx(0.01)] * 2, "high_quality_within_std": 3.0}
  assert writers.read_metrics(str(workdir))  # still readable
  # A non-finite metric is the string "inf" / "nan", as in metrics.jsonl.
  assert writers.clean_value(float("inf")) == "inf"
  assert writers.clean_value(float("nan")) == "nan"
  assert writers.clean_value(2) == 2.0
  # Replaying flags.txt in a fresh workdir is accepted (checked quickly by
  # asking for zero steps).
  r2 = run_module("gan_jax.main", f"--flagfile={workdir / 'flags.txt'}",
                  f"--workdir={tmp_path / 'replay'}", "--num_steps=0")
  assert r2.returncode == 0, r2.stderr[-2000:]


def test_evaluate_without_checkpoint_is_one_line(tmp_path):
  r = run_module("gan_jax.evaluate", f"--workdir={tmp_path}")
  line = assert_one_line_error(r)
  assert "no checkpoint" in line


@pytest.mark.parametrize("args, parts", [
    # An unknown optimizer lists the valid ones.
    (("--g_optimizer=adamw2",), ("unknown optimizer 'adamw2'; valid: adam, "
                                 "rmsprop, sgd",)),
    # An unknown registry name lists the valid ones.
    (("--loss=nope",), ("nope", "minimax")),
    # A numeric flag out of its bounds.
    (("--g_optimizer.lr=nan",), ("--g_optimizer.lr=nan", "finite")),
    # A missing flagfile, without absl's "ERROR::" prefix.
    (("--flagfile=experiments/does_not_exist.flags",),
     ("error: Unable to open flagfile", "does_not_exist")),
    # An architecture knob the chosen architecture does not take (the
    # flagfile's --g.batchnorm is pacgan_mlp's): names the keys it takes.
    (("--generator=cgan_mlp", "--discriminator=cgan_maxout"),
     ("error: --g.batchnorm=True: --generator=cgan_mlp does not take it; "
      "its keys: hidden, layers, norm",)),
    # A bucket URL as the workdir (it would become a local "gs:" folder).
    (("--workdir=gs://bucket/run",), ("--workdir=gs://bucket/run",
                                      "not a URL")),
])
def test_bad_flags_are_one_line(tmp_path, args, parts):
  r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                 f"--workdir={tmp_path}", *args)
  line = assert_one_line_error(r)
  assert all(part in line for part in parts), line


def test_batch_not_divisible_by_devices_is_one_line(tmp_path):
  r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                 f"--workdir={tmp_path}", "--batch_size=100",
                 env={"XLA_FLAGS":
                      "--xla_force_host_platform_device_count=8"})
  line = assert_one_line_error(r)
  assert "batch_size=100" in line and "8 devices" in line


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("keep me")
  r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                 f"--workdir={path}")
  line = assert_one_line_error(r)
  assert str(path) in line and "not a directory" in line
  # Below a file: the file system's own reason, still one line.
  r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                 f"--workdir={path}/run")
  line = assert_one_line_error(r)
  assert f"{path}/run" in line and "Not a directory" in line
  assert path.read_text() == "keep me"


@pytest.mark.parametrize("module", ["gan_jax.main", "gan_jax.sweep"])
def test_positional_arguments_are_one_line(module):
  r = run_module(module, "stray", "words")
  line = assert_one_line_error(r)
  assert line == "error: unexpected arguments: stray words"


@pytest.mark.parametrize("source, parts", [
    # A name the package has taken: the user's file and line, and the fix.
    ("from gan_jax import losses\n\n"
     "@losses.LOSSES.register('ns')\ndef mine():\n  return None\n",
     ("importing 'user_mod' raised ValueError: loss 'ns' is already "
      "registered (register(..., override=True) replaces it)",
      "user_mod.py:3)")),
    # Any other failure while importing.
    ("x = 1\nraise RuntimeError('boom')\n",
     ("importing 'user_mod' raised RuntimeError: boom", "user_mod.py:2)")),
    # A failure inside a library the module calls: still the user's line.
    ("import jax.numpy as jnp\nx = jnp.zeros(2) + jnp.zeros(3)\n",
     ("importing 'user_mod' raised", "user_mod.py:2)")),
    # sys.exit while importing: the run ended silently with exit 0.
    ("import sys\nsys.exit(0)\n",
     ("importing 'user_mod' called sys.exit(0)", "user_mod.py:2)")),
    # A module that is not there.
    (None, ("cannot import 'user_mod'",)),
])
def test_extra_modules_that_fail_are_one_line(tmp_path, monkeypatch, source,
                                              parts):
  from gan_jax import cli
  from gan_jax.errors import UserError
  if source is not None:
    (tmp_path / "user_mod.py").write_text(source)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(__import__("sys").modules, "user_mod", raising=False)
  with pytest.raises(UserError) as e:
    cli.import_extra_modules(["user_mod"])
  line = str(e.value)
  assert line.startswith("--extra_modules: ") and "\n" not in line, line
  assert all(part in line for part in parts), line


def test_a_workdir_in_use_is_refused_and_left_alone(tmp_path):
  from gan_jax import run_guard
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "metrics.jsonl").write_text('{"step": 99}\n')
  with run_guard.exclusive_workdir(str(workdir)):
    r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                   f"--workdir={workdir}", "--num_steps=10")
    line = assert_one_line_error(r)
    assert f"--workdir={workdir} is in use by another run (process " \
        f"{os.getpid()} on " in line, line
  # Nothing of the running run was touched (a resume would truncate this).
  assert (workdir / "metrics.jsonl").read_text() == '{"step": 99}\n'
  # Once the holder is gone, the lock is free again.
  with run_guard.exclusive_workdir(str(workdir)):
    pass


def test_quiet_libraries_filter():
  """orbax's INFO chatter and its read-only note (evaluate and sample open
  checkpoints read-only on purpose) stay off the console; its other
  warnings and everything from other libraries pass."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  from gan_jax import cli  # pylint: disable=g-import-not-at-top
  quiet = cli._QuietLibraries()  # pylint: disable=protected-access
  def record(path, level, msg):
    return std_logging.LogRecord("absl", level, path, 1, msg, ("/x",), None)
  orbax = "/venv/site-packages/orbax/checkpoint/checkpoint_manager.py"
  assert not quiet.filter(record(orbax, std_logging.INFO, "Saving %s"))
  assert not quiet.filter(record(orbax, std_logging.WARNING,
                                 "Given directory is read only=%s"))
  assert quiet.filter(record(orbax, std_logging.WARNING, "Failed %s"))
  assert quiet.filter(record("/repo/gan_jax/train.py", std_logging.INFO,
                             "step %s"))


def test_binary_flagfile_is_one_line(tmp_path):
  """A flagfile that is not text (a .pth passed by mistake): absl raises
  UnicodeDecodeError while reading it; one line naming the file."""
  binary = tmp_path / "weights.pth"
  binary.write_bytes(b"PK\x03\x04\x8d\xff\xfe" * 10)
  r = run_module("gan_jax.main", f"--flagfile={binary}",
                 f"--workdir={tmp_path}/w")
  line = assert_one_line_error(r)
  assert line == f"error: --flagfile={binary} is not a text (UTF-8) flagfile"


@pytest.mark.parametrize("module, args, message", [
    # A sweep file given to gan_jax.main trained a default run, exit 0.
    ("gan_jax.main", ["--flagfile=experiments/sweeps/quickstart_lr.flags"],
     "--sweep_base is a flag of gan_jax.sweep, not of gan_jax.main"),
    ("gan_jax.main", ["--flagfile=experiments/quickstart.flags", "--num=5"],
     "--num is a flag of gan_jax.sample, not of gan_jax.main"),
    ("gan_jax.evaluate", ["--num=5"],
     "--num is a flag of gan_jax.sample, not of gan_jax.evaluate"),
    ("gan_jax.sample", ["--out=x.png", "--num_samples=5"],
     "--num_samples is a flag of gan_jax.evaluate, not of gan_jax.sample"),
    # Refused by the training code, after the workdir was made: it is
    # removed again (it was left empty).
    ("gan_jax.main", ["--flagfile=experiments/quickstart.flags",
                      "--loss=bogus"], "unknown loss 'bogus'"),
    # ... and as a sweep's base, the same default runs.
    ("gan_jax.sweep", ["--sweep_base=experiments/sweeps/quickstart_lr.flags",
                       "--sweep_seeds=0", "--sweep_print_only"],
     "--sweep_base must be a training flagfile, not a sweep file"),
])
def test_flags_of_another_tool_are_refused(tmp_path, module, args, message):
  r = run_module(module, *args, f"--workdir={tmp_path / 'run'}",
                 f"--sweep_dir={tmp_path / 'sweep'}" if module ==
                 "gan_jax.sweep" else "--noprogress", timeout=120)
  assert message in assert_one_line_error(r)
  assert not (tmp_path / "run").exists()


_USER_CODE = """
import flax.linen as nn
import jax.numpy as jnp
from gan_jax import losses, models


@losses.LOSSES.register("raising_loss")
def raising_loss():
  raise ValueError("my loss is broken")


@losses.LOSSES.register("positional_loss")
def positional_loss(cfg):
  return None


class WrongCall(nn.Module):

  @nn.compact
  def __call__(self, z, y=None, train=True):
    return nn.Dense(3)(z) @ jnp.zeros((5, 5))


@models.GENERATORS.register("wrong_call_g")
def wrong_call_g(shape, num_classes, common, **knobs):
  return WrongCall()
"""


@pytest.mark.parametrize("flag, parts", [
    ("--loss=raising_loss",
     ("error: ValueError in your code at ", "user_code.py:9: my loss is "
      "broken (--traceback prints the whole traceback)")),
    ("--loss=positional_loss",
     ("error: loss 'positional_loss' (", "user_code.py:12) cannot be "
      "called as gan_jax calls it", "missing a required argument: 'cfg'")),
    ("--generator=wrong_call_g",
     ("error: TypeError in your code at ", "user_code.py:21: ")),
])
def test_user_factories_that_fail_are_one_line(tmp_path, flag, parts):
  """A registered user factory that raises when built or called, or cannot
  take gan_jax's arguments, is one line with the user's file:line (was a
  bare traceback); --traceback shows the whole traceback."""
  (tmp_path / "user_code.py").write_text(_USER_CODE)
  env = {"PYTHONPATH": str(tmp_path)}
  args = ["--flagfile=experiments/quickstart.flags", "--noprogress",
          f"--workdir={tmp_path / 'run'}", "--extra_modules=user_code", flag]
  line = assert_one_line_error(run_module("gan_jax.main", *args, env=env))
  assert all(part in line for part in parts), line
  if "positional" not in flag:  # a signature error has no traceback
    r = run_module("gan_jax.main", *args, "--traceback", env=env)
    assert r.returncode != 0 and "Traceback" in r.stderr, r.stderr


def test_user_module_calling_sys_exit_is_an_error(tmp_path):
  """sys.exit(0) in an --extra_modules module ended the run silently with
  exit 0: nothing trained, nothing said."""
  (tmp_path / "quits.py").write_text("import sys\nsys.exit(0)\n")
  r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                 f"--workdir={tmp_path / 'run'}", "--extra_modules=quits",
                 env={"PYTHONPATH": str(tmp_path)})
  assert "called sys.exit(0)" in assert_one_line_error(r)


def test_flagfile_with_a_byte_order_mark_is_read(tmp_path):
  """A flagfile saved with a UTF-8 byte-order mark (Windows editors) failed
  with "unexpected arguments: \\ufeff--flagfile=..."; it is read as
  text."""
  flagfile = tmp_path / "bom.flags"
  flagfile.write_bytes(b"\xef\xbb\xbf--flagfile=experiments/quickstart.flags"
                       b"\n--num_steps=2\n--log_every=2\n--steps_per_loop=1\n")
  r = run_module("gan_jax.main", f"--flagfile={flagfile}", "--noprogress",
                 f"--workdir={tmp_path / 'run'}")
  assert r.returncode == 0, r.stderr
  assert "final (step 2)" in r.stdout

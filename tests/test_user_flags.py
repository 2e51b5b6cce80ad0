"""A user module given to --extra_modules defines its own knobs (a key of
the loss section for its loss) with gan_jax.sections: parsed, recorded,
compared on resume and read back by the tools, without editing the
package."""

import pytest

from helpers import assert_one_line_error, run_module

USER_LOSS = '''
from gan_jax import losses, sections

sections.float_("loss", "g_scale", None, "Scale of G's non-saturating "
                "loss (default 1).", owner="loss", bounds="> 0")


@losses.LOSSES.register("scaled_ns")
def scaled_ns(g_scale=1.0, smoothing=1.0):
  base = losses.LOSSES("ns", smoothing=smoothing)
  return losses.Loss(d=base.d, g=lambda fake: g_scale * base.g(fake))
'''

CLASH = '''
from gan_jax import flags as flags_lib
flags_lib.integer("batch_size", 7, "Mine.")
'''


@pytest.fixture(name="user_env")
def fixture_user_env(tmp_path):
  (tmp_path / "my_loss.py").write_text(USER_LOSS)
  (tmp_path / "clash.py").write_text(CLASH)
  return {"PYTHONPATH": str(tmp_path)}


def _train(tmp_path, user_env, *flags):
  return run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                    "--g.hidden=16", "--d.hidden=8", "--steps_per_loop=1",
                    "--log_every=2", "--noprogress",
                    f"--workdir={tmp_path / 'run'}",
                    "--extra_modules=my_loss", "--loss=scaled_ns", *flags,
                    env=user_env)


def test_a_user_flag_is_parsed_recorded_and_compared_on_resume(tmp_path,
                                                               user_env):
  r = _train(tmp_path, user_env, "--loss.g_scale=2", "--num_steps=2")
  assert r.returncode == 0, r.stderr
  assert "--loss.g_scale=2.0\n" in (
      tmp_path / "run" / "flags.txt").read_text()
  # Its bounds are checked like gan_jax's own.
  line = assert_one_line_error(_train(tmp_path, user_env,
                                      "--loss.g_scale=-1", "--num_steps=4"))
  assert "--loss.g_scale=-1" in line and "> 0" in line, line
  # A misspelled knob is refused in one line, naming the right one.
  line = assert_one_line_error(_train(tmp_path, user_env,
                                      "--loss.g_scal=2", "--num_steps=4"))
  assert line == ("error: --loss.g_scal: section 'loss' has no key "
                  "'g_scal'; its keys: a, b, c, g_scale, smoothing"), line
  # It shapes the update: a resume with another value is refused.
  line = assert_one_line_error(_train(tmp_path, user_env,
                                      "--loss.g_scale=3", "--num_steps=4"))
  assert "--loss.g_scale (was 2.0, now 3.0)" in line, line
  # The tools read the run back with its module and its flag.
  r = run_module("gan_jax.sample", f"--workdir={tmp_path / 'run'}",
                 f"--out={tmp_path / 's.npz'}", "--num=4", env=user_env)
  assert r.returncode == 0, r.stderr
  # Replaying flags.txt (it names the module) trains the same run again.
  r = run_module("gan_jax.main",
                 f"--flagfile={tmp_path / 'run' / 'flags.txt'}",
                 f"--workdir={tmp_path / 'replay'}", env=user_env)
  assert r.returncode == 0, r.stderr
  assert "--loss.g_scale=2.0\n" in (
      tmp_path / "replay" / "flags.txt").read_text()


def test_a_user_flag_may_not_take_a_gan_jax_name(tmp_path, user_env):
  line = assert_one_line_error(run_module(
      "gan_jax.main", "--flagfile=experiments/quickstart.flags",
      "--extra_modules=clash", f"--workdir={tmp_path / 'run'}",
      env=user_env))
  assert "flag --batch_size is already defined" in line
  assert "clash.py:3" in line, line

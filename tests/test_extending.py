"""docs/extending.md's method, written outside the package
(examples/lecam_gan.py: its own section of knobs and its own train state),
trains from a flagfile, resumes bit for bit after kill -9, and refuses a
misspelled knob in one line naming the section and its keys."""

import os
import re

import jax
import numpy as np
import pytest

from gan_jax import checkpoint as ckpt_lib
from helpers import (REPO, assert_one_line_error, compile_cache_env,
                     fault_env, run_module)

RUN = ["--flagfile=examples/lecam_ring.flags", "--g.hidden=16",
       "--d.hidden=8", "--num_steps=12", "--steps_per_loop=2",
       "--log_every=2", "--checkpoint_every=4", "--noprogress"]


def test_the_docs_show_the_examples_code():
  with open(os.path.join(REPO, "docs", "extending.md"), encoding="utf-8") as f:
    doc = f.read()
  with open(os.path.join(REPO, "examples", "lecam_gan.py"),
            encoding="utf-8") as f:
    code = f.read()
  blocks = re.findall(r"```python\n# examples/lecam_gan\.py\n(.*?)```", doc,
                      re.S)
  assert blocks == [code]


@pytest.fixture(scope="module", name="env")
def fixture_env(tmp_path_factory):
  return compile_cache_env(tmp_path_factory)


def _train(env, workdir, *flags, **faults):
  if faults:
    env = {**env, **fault_env(**faults)}
    flags += ("--extra_modules=examples.lecam_gan,faults",)
  return run_module("gan_jax.main", *RUN, f"--workdir={workdir}", *flags,
                    env=env)


def _state(workdir, step=12):
  return ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints"),
                              read_only=True).read_state(step)


def test_the_example_method_resumes_bitwise_after_kill9(tmp_path, env):
  ref = tmp_path / "reference"
  r = _train(env, ref)
  assert r.returncode == 0, r.stderr[-3000:]
  state = _state(ref)
  anchors = {k: float(np.asarray(v)) for k, v in state["extra"].items()}
  assert set(anchors) == {"lecam_real", "lecam_fake"}
  assert all(a != 0 for a in anchors.values())  # they moved
  assert "--lecam.weight=0.3" in (ref / "flags.txt").read_text()

  work = tmp_path / "run"
  r = _train(env, work, signal_at_step=6)
  assert r.returncode == -9, r.stderr[-2000:]
  r = _train(env, work)
  assert r.returncode == 0 and "resumed from step 4" in r.stderr, (
      r.stderr[-3000:])
  got, want = (jax.tree_util.tree_leaves_with_path(_state(d))
               for d in (work, ref))
  assert [p for p, _ in got] == [p for p, _ in want]
  for (path, a), (_, b) in zip(got, want):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), (
        jax.tree_util.keystr(path))


def test_a_misspelled_knob_names_the_section_and_its_keys(tmp_path, env):
  r = _train(env, tmp_path / "run", "--lecam.wieght=1")
  line = assert_one_line_error(r)
  assert line == ("error: --lecam.wieght: section 'lecam' has no key "
                  "'wieght'; its keys: decay, weight"), line
  # A knob out of its bounds, and the section of a method not chosen.
  line = assert_one_line_error(_train(env, tmp_path / "run",
                                      "--lecam.decay=1"))
  assert "--lecam.decay" in line and "[0, 1)" in line, line
  line = assert_one_line_error(_train(env, tmp_path / "run", "--method=gan",
                                      "--lecam.weight=1"))
  assert "--lecam.weight configures --method=lecam" in line, line

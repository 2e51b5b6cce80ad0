"""gan_jax.train: the loop's progress display and its out-of-memory hint."""

import jax

from helpers import assert_one_line_error, run_module, tiny_config




def test_progress_bar_counts_finished_calls_only(monkeypatch):
  """A queued call is counted once it has finished (the bar showed 100/100
  while the dispatched calls still ran for minutes)."""
  from gan_jax import train
  waited = []
  monkeypatch.setattr(train.jax, "block_until_ready", waited.append)
  bar = train._ProgressBar(total=10, initial=0)  # pylint: disable=protected-access
  first, second = object(), object()
  bar.queued(first, 4)
  assert bar._bar.n == 0 and not waited  # pylint: disable=protected-access
  bar.queued(second, 6)  # waits for the first call, counts it
  assert waited == [first] and bar._bar.n == 4  # pylint: disable=protected-access
  bar.write("step 10")  # a log line: everything dispatched has finished
  assert waited == [first, second] and bar._bar.n == 10  # pylint: disable=protected-access
  bar.close()


def test_d_steps_is_bounded():
  """--d_steps=100000 was accepted and compiled for minutes."""
  r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                 "--d_steps=100000", "--workdir=/nonexistent/never")
  assert assert_one_line_error(r) == (
      "error: flag --d_steps=100000: must be in [1, 100]")


def test_memory_hint_names_the_flags_that_make_the_state_big():
  """Out of memory with a huge --z_dim said to lower --batch_size."""
  from gan_jax import gan as gan_lib
  from gan_jax import state as state_lib
  from gan_jax import train
  cfg = tiny_config(z_dim=2_000_000_000, **{"g.hidden": 16})
  gan = gan_lib.build(cfg)
  abstract = jax.eval_shape(lambda: state_lib.create_replicas(gan, 0, 1))
  hint = train.memory_hint(cfg, abstract)
  assert ("its largest array params/G/Dense_0/kernel of shape "
          "(2000000000, 16) (128.0 GB), sized by --z_dim=2000000000, "
          "--g.hidden=16") in hint, hint
  assert "(--batch_size=16 x (--d_steps=1 + 1) x --z_dim=2000000000)" in hint


def test_out_of_device_memory_names_z_dim(tmp_path):
  r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                 "--z_dim=2000000000", "--num_steps=2", "--noprogress",
                 f"--workdir={tmp_path / 'run'}")
  line = assert_one_line_error(r)
  assert line.startswith("error: out of device memory (") and (
      "sized by --z_dim=2000000000, --g.hidden=400" in line), line


def test_call_length_lands_on_every_cadence():
  """The fused calls end at multiples of --steps_per_loop and at every
  log / checkpoint / evaluation step, whatever their relation."""
  from gan_jax.train import call_length

  def calls(start, total, spl, cadences):
    out, step = [], start
    while step < total:
      step += call_length(step, total, spl, cadences)
      out.append(step)
    return out

  # quickstart: 100-step calls, logs every 500 (unchanged by the cadences).
  assert calls(0, 1000, 100, [500, 0])[:6] == [100, 200, 300, 400, 500, 600]
  # dcgan_mnist.flags with --num_steps=20 --log_every=10 (was refused).
  assert calls(0, 20, 50, [10, 1000]) == [10, 20]
  assert calls(0, 12, 4, [3, 3]) == [3, 4, 6, 8, 9, 12]
  # A resume from a boundary continues on the same calls.
  assert calls(6, 12, 4, [3, 3]) == [8, 9, 12]
  assert calls(0, 7, 5, [0, 0, 0]) == [5, 7]


def test_log_every_need_not_divide_steps_per_loop(tmp_path):
  """--num_steps=20 --log_every=10 on a flagfile with 100-step calls was
  refused ("must be a multiple of --steps_per_loop")."""
  import json
  r = run_module("gan_jax.main", "--flagfile=experiments/quickstart.flags",
                 "--num_steps=20", "--log_every=10", "--noprogress",
                 f"--workdir={tmp_path / 'run'}")
  assert r.returncode == 0, r.stderr
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [10, 20]

"""gan_jax.run_guard: the ordered shutdown and its error precedence (the
lock, signals and stop vote are exercised through training runs in
test_main, test_errors, test_checkpoint and test_multihost)."""

import pytest

from gan_jax import errors
from gan_jax import run_guard


class Closer:
  """Records its close in ``order``; raises ``error`` there if given."""

  def __init__(self, name, order, error=None):
    self.name, self.order, self.error = name, order, error

  def close(self):
    self.order.append(self.name)
    if self.error is not None:
      raise self.error


def test_closes_in_reverse_order_and_raises_the_first_failure(tmp_path):
  order = []
  first, second = OSError("disk full"), ValueError("second")
  with pytest.raises(OSError) as e:
    with run_guard.RunGuard(str(tmp_path)) as guard:
      for name, error in (("writer", second), ("ckpts", first),
                          ("profile", None)):
        guard.closes(Closer(name, order, error))
  assert e.value is first
  assert order == ["profile", "ckpts", "writer"]  # all, despite the failure
  with run_guard.RunGuard(str(tmp_path)):  # the lock was let go
    pass


def test_the_error_on_its_way_out_is_reported_and_takes_at_once(tmp_path):
  order = []
  failed = errors.UserError("tensorboard failed")
  failed.at_once = True  # native threads left failing: skip the teardown
  error = errors.UserError("non-finite d_loss")
  with pytest.raises(errors.UserError) as e:
    with run_guard.RunGuard(str(tmp_path)) as guard:
      guard.closes(Closer("writer", order, failed))
      raise error
  assert e.value is error and e.value.at_once
  assert order == ["writer"]


def test_an_interrupt_while_closing_closes_the_rest_first(tmp_path):
  order = []
  with pytest.raises(KeyboardInterrupt):
    with run_guard.RunGuard(str(tmp_path)) as guard:
      guard.closes(Closer("writer", order))
      guard.closes(Closer("ckpts", order, KeyboardInterrupt()))
  assert order == ["ckpts", "writer"]


class Writer(Closer):
  failure = None  # process 0's writes all went through


def test_a_signal_stops_after_the_step_and_raises_once_all_is_closed(
    tmp_path):
  import signal
  import jax
  order = []
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  with pytest.raises(errors.Stopped) as e:
    with run_guard.RunGuard(str(tmp_path)) as guard:
      writer = guard.closes(Writer("writer", order))
      ckpts = guard.closes(Closer("ckpts", order))
      guard.watch(mesh, writer, ckpts, total=10)
      with guard.signals():
        assert not guard.vote(2) and not guard.end_step(2, saved=False)
        signal.raise_signal(signal.SIGTERM)
        assert guard.vote(4)
        assert guard.end_step(4, saved=True)
      assert not order  # raised only once the saves are committed
  assert order == ["ckpts", "writer"]
  assert e.value.exit_code == 143
  assert str(e.value) == ("stopped by SIGTERM at step 4 of 10, its "
                          "checkpoint saved: rerun the same command to resume")

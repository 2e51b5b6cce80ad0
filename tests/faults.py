"""Faults injected into a training run from outside, for tests only.

Loaded with ``--extra_modules=faults`` (tests/ on PYTHONPATH, as
``helpers.run_module`` sets it) and set by environment variables, so neither
the package's flags nor its compiled step carry test code:

* ``GAN_JAX_TEST_NAN_AT_STEP=N``: D's loss is NaN in training step N, inside
  the compiled step (the gradients, and so the state, go non-finite as in a
  real divergence): the GAN method's D objective adds it to D's loss.
* ``GAN_JAX_TEST_SIGNAL_AT_STEP=N``: the process sends itself
  ``GAN_JAX_TEST_SIGNAL`` (``KILL``, the default, ``TERM`` or ``INT``) at
  the first step boundary at or past step N. TERM/INT right after the
  update, before the boundary's stop vote (``RunGuard.vote``), as a
  preemption arriving during the call; KILL once the boundary is logged and
  saved (``RunGuard.end_step``), with the earlier checkpoints committed and
  the boundary's own save, if any, still in flight.
* ``GAN_JAX_TEST_SIGNAL_PROCESS=I``: in a multi-process run only process I
  signals itself (default: every process; with KILL the others are left
  waiting in collectives, as after a host failure).
"""

import os
import signal

import jax
import jax.numpy as jnp

from gan_jax import run_guard
from gan_jax.methods import gan as gan_method


def _int(name):
  value = os.environ.get(name)
  return None if value in (None, "") else int(value)


def _poison_d_loss(nan_at: int):
  """The GAN method's D objective with D's loss NaN in step ``nan_at``."""
  d_objective = gan_method.GAN.d_objective

  def poisoned(self, params, state, batch, ctx):
    loss, (metrics, net_state, extra) = d_objective(self, params, state,
                                                    batch, ctx)
    nan = jnp.where(state.step + 1 == nan_at, jnp.nan, 0.0)
    metrics = {**metrics, "d_loss": metrics["d_loss"] + nan}
    return loss + nan, (metrics, net_state, extra)

  gan_method.GAN.d_objective = poisoned


def _signal_at(at: int, name: str, process: int):
  """RunGuard's step boundaries, with the signal ``name`` at step ``at``."""
  vote, end_step = run_guard.RunGuard.vote, run_guard.RunGuard.end_step
  due = {}  # guard -> the step it signals at (once)

  def mine():
    return process in (-1, jax.process_index())

  def vote_and_signal(self, step):
    if step >= at and self not in due and mine():
      due[self] = step
      if name != "KILL":
        os.kill(os.getpid(), getattr(signal, "SIG" + name))
    return vote(self, step)

  def end_step_and_kill(self, step, saved):
    if end_step(self, step, saved):
      return True  # stopping anyway (a signal came first)
    if name == "KILL" and due.get(self) == step:
      if not saved:  # earlier saves committed; a save of this step in flight
        self.checkpoints.wait()
      os.kill(os.getpid(), signal.SIGKILL)
    return False

  run_guard.RunGuard.vote = vote_and_signal
  run_guard.RunGuard.end_step = end_step_and_kill


_nan_at = _int("GAN_JAX_TEST_NAN_AT_STEP")
if _nan_at is not None:
  _poison_d_loss(_nan_at)
_signal_step = _int("GAN_JAX_TEST_SIGNAL_AT_STEP")
if _signal_step is not None:
  _process = _int("GAN_JAX_TEST_SIGNAL_PROCESS")
  _signal_at(_signal_step, os.environ.get("GAN_JAX_TEST_SIGNAL", "KILL"),
             -1 if _process is None else _process)

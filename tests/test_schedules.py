"""Goodfellow et al. 2014's optimizer schedules: pylearn2's ExponentialDecay of
the learning rate and MomentumAdjustor ramp of SGD's momentum."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import checkpoint as ckpt_lib
from gan_jax import flags as flags_lib
from gan_jax import gan as gan_lib
from gan_jax import optim
from gan_jax import train
from gan_jax.errors import UserError
from helpers import tiny_config


def test_exponential_divides_the_rate_after_every_update_down_to_a_floor():
  s = optim.exponential(0.1, 0, decay_factor=1.000004, lr_min=1e-6)
  for t in (0, 1, 1000, 500_000):
    assert float(s(t)) == pytest.approx(0.1 / 1.000004 ** t, rel=1e-6)
  assert float(s(10**8)) == pytest.approx(1e-6)
  assert float(optim.exponential(0.1, 0, 1.0, 0.0)(10**6)) \
      == pytest.approx(0.1)


def test_sgd_momentum_ramps_linearly_between_two_updates():
  tx = optim.sgd(optax.constant_schedule, False, lr=0.1, momentum=0.5,
                 ramp_start=1, ramp_end=3, final_momentum=0.7)
  params = jnp.zeros(2)
  state = tx.init(params)
  grads = [jnp.array([1.0, -2.0]), jnp.array([0.5, 0.0]),
           jnp.array([-1.0, 1.0]), jnp.array([2.0, 2.0]),
           jnp.array([1.0, 1.0])]
  # optax's momentum: trace <- g + mu_t trace; update = -lr trace.
  momenta = [0.5, 0.5, 0.6, 0.7, 0.7]
  trace = np.zeros(2)
  want = np.zeros(2)
  for g, mu in zip(grads, momenta):
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    trace = np.asarray(g) + mu * trace
    want = want - 0.1 * trace
    np.testing.assert_allclose(np.asarray(params), want, rtol=1e-6)
  assert float(state.hyperparams["momentum"]) == pytest.approx(0.7)


def schedule_config(**overrides):
  ramp = {"momentum": 0.5, "ramp_start": 1, "ramp_end": 3,
          "final_momentum": 0.7, "lr": 0.05}
  values = dict(g_optimizer="sgd", d_optimizer="sgd",
                lr_schedule="exponential",
                **{f"{side}_optimizer.{k}": v for k, v in ramp.items()
                   for side in "gd"},
                **{"lr_schedule.decay_factor": 1.01,
                   "lr_schedule.lr_min": 0.03, "g.batchnorm": False})
  values.update(overrides)
  return tiny_config(**values)


def test_schedules_resume_exactly(tmp_path):
  """The schedules' state is the update count in the optimizer state: a run
  stopped at step 2 and continued to 4 equals one that ran straight to 4
  (num_steps may change on resume with this schedule, unlike linear and
  cosine, which are laid out over num_steps)."""
  straight = tmp_path / "straight"
  train.train_and_evaluate(schedule_config(checkpoint_every=4),
                           str(straight))
  resumed = tmp_path / "resumed"
  train.train_and_evaluate(schedule_config(num_steps=2, checkpoint_every=2),
                           str(resumed))
  train.train_and_evaluate(schedule_config(checkpoint_every=2), str(resumed))
  a = ckpt_lib.Checkpoints(str(straight / "checkpoints"),
                           read_only=True).read_state(4)
  b = ckpt_lib.Checkpoints(str(resumed / "checkpoints"),
                           read_only=True).read_state(4)
  leaves_a = jax.tree_util.tree_leaves(a)
  leaves_b = jax.tree_util.tree_leaves(b)
  assert len(leaves_a) == len(leaves_b) > 10
  for x, y in zip(leaves_a, leaves_b):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
  # The momentum reached its final value; the rate decayed to its floor.
  named = {jax.tree_util.keystr(p): float(np.asarray(v)) for p, v in
           jax.tree_util.tree_leaves_with_path(a)
           if "hyperparams']" in jax.tree_util.keystr(p)}
  assert {k: v for k, v in named.items() if k.endswith("['momentum']")} == {
      "['opt_state']['G']['hyperparams']['momentum']": pytest.approx(0.7),
      "['opt_state']['D']['hyperparams']['momentum']": pytest.approx(0.7)}
  assert named["['opt_state']['D']['hyperparams']['learning_rate']"] == \
      pytest.approx(max(0.05 / 1.01 ** 3, 0.03))
  assert flags_lib.structural_differences(
      schedule_config(num_steps=2), schedule_config()) == []
  assert flags_lib.structural_differences(
      schedule_config(num_steps=2, lr_schedule="linear"),
      schedule_config(lr_schedule="linear")) == ["num_steps"]


def test_bad_ramps_and_keys_the_optimizer_does_not_take():
  with pytest.raises(UserError, match="ramp_start=3 must be below"):
    gan_lib.build(schedule_config(**{"g_optimizer.ramp_start": 3}))
  with pytest.raises(UserError) as e:
    gan_lib.build(tiny_config(**{"g_optimizer.ramp_end": 5}))
  assert str(e.value) == ("--g_optimizer.ramp_end=5: --g_optimizer=adam does "
                          "not take it; its keys: b1, b2, lr")
  with pytest.raises(UserError) as e:
    gan_lib.build(tiny_config(**{"lr_schedule.decay_factor": 1.1}))
  assert str(e.value) == ("--lr_schedule.decay_factor=1.1: --lr_schedule="
                          "constant does not take it; its keys: none")
  assert not gan_lib.inert_flags(schedule_config())

"""Each loss at hand-computed logits (independent numpy computation)."""

import numpy as np
import pytest

from gan_jax import losses
from gan_jax.errors import UserError
from helpers import generator, tiny_config

REAL = np.array([2.0, -1.0, 0.5], np.float32)
FAKE = np.array([-3.0, 0.0, 1.5], np.float32)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def bce(logits, target):
  p = sigmoid(logits.astype(np.float64))
  return np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p)))


def get(name, **kw):
  return losses.build(tiny_config(loss=name, **kw))


@pytest.mark.parametrize("name", ["minimax", "ns"])
def test_cross_entropy_discriminator(name):
  d, dr, df = get(name).d(REAL, FAKE)
  np.testing.assert_allclose(dr, bce(REAL, 1.0), rtol=1e-6)
  np.testing.assert_allclose(df, bce(FAKE, 0.0), rtol=1e-6)
  np.testing.assert_allclose(d, dr + df, rtol=1e-6)


def test_minimax_generator_is_log_one_minus_d():
  expected = np.mean(np.log(1 - sigmoid(FAKE.astype(np.float64))))
  np.testing.assert_allclose(get("minimax").g(FAKE), expected, rtol=1e-6)


def test_non_saturating_generator_is_minus_log_d():
  expected = -np.mean(np.log(sigmoid(FAKE.astype(np.float64))))
  np.testing.assert_allclose(get("ns").g(FAKE), expected, rtol=1e-6)


def test_label_smoothing_changes_only_the_real_target():
  plain = get("ns").d(REAL, FAKE)
  smooth = get("ns", **{"loss.smoothing": 0.9}).d(REAL, FAKE)
  np.testing.assert_allclose(smooth[1], bce(REAL, 0.9), rtol=1e-6)
  assert not np.isclose(smooth[1], plain[1])
  np.testing.assert_allclose(smooth[2], plain[2], rtol=1e-7)  # fake part
  np.testing.assert_allclose(get("ns", **{"loss.smoothing": 0.9}).g(FAKE),
                             get("ns").g(FAKE), rtol=1e-7)


def test_lsgan_targets():
  eq8 = get("lsgan", **{"loss.a": -1.0, "loss.b": 1.0, "loss.c": 0.0})
  d, dr, df = eq8.d(REAL, FAKE)
  np.testing.assert_allclose(dr, 0.5 * np.mean((REAL - 1) ** 2), rtol=1e-6)
  np.testing.assert_allclose(df, 0.5 * np.mean((FAKE + 1) ** 2), rtol=1e-6)
  np.testing.assert_allclose(
      get("lsgan", **{"loss.c": 0.0}).g(FAKE), 0.5 * np.mean(FAKE ** 2),
      rtol=1e-6)


def test_wgan_and_hinge():
  d, dr, df = get("wgan").d(REAL, FAKE)
  np.testing.assert_allclose(d, FAKE.mean() - REAL.mean(), rtol=1e-6)
  np.testing.assert_allclose(get("wgan").g(FAKE), -FAKE.mean(), rtol=1e-6)
  d, dr, df = get("hinge").d(REAL, FAKE)
  np.testing.assert_allclose(dr, np.mean(np.maximum(0, 1 - REAL)), rtol=1e-6)
  np.testing.assert_allclose(df, np.mean(np.maximum(0, 1 + FAKE)), rtol=1e-6)
  np.testing.assert_allclose(get("hinge").g(FAKE), -FAKE.mean(), rtol=1e-6)


def test_unknown_loss_lists_valid_names():
  from gan_jax.errors import UserError
  with pytest.raises(UserError) as e:
    get("nope")
  msg = str(e.value)
  assert "nope" in msg and "minimax" in msg and "ns" in msg
  assert "\n" not in msg


def test_registry_is_extensible_from_outside():
  name = "test_only_constant"
  if name not in losses.LOSSES:
    @losses.LOSSES.register(name)
    def _constant():
      return losses.Loss(d=lambda r, f: (r.mean() * 0, r.mean() * 0,
                                         f.mean() * 0),
                         g=lambda f: f.mean() * 0)
  assert float(get(name).g(FAKE)) == 0.0


def test_a_factory_returning_the_wrong_type_is_one_line():
  from gan_jax import models
  from gan_jax import penalties
  name = "test_only_wrong_type"
  registries = (losses.LOSSES, models.GENERATORS, penalties.PENALTIES)
  for registry in registries:
    registry.register(name, lambda *args: 42, override=True)
  try:
    _check_wrong_type_errors(name)
  finally:
    for registry in registries:
      registry._items.pop(name)  # pylint: disable=protected-access


def _check_wrong_type_errors(name):
  from gan_jax import penalties
  with pytest.raises(UserError, match="^loss 'test_only_wrong_type': its "
                     "factory returned int, not gan_jax.losses.Loss$"):
    losses.build(tiny_config(loss=name))
  with pytest.raises(UserError, match="returned int, not flax.linen.*Module"):
    generator(name, tiny_config(generator=name), (2,), 0)
  with pytest.raises(UserError, match="returned int, not .*Callable"):
    penalties.PENALTIES(name, tiny_config())
  with pytest.raises(ValueError, match="override=True"):
    losses.LOSSES.register("ns", lambda: None)


@pytest.mark.parametrize("name", ["minimax", "ns", "lsgan", "wgan", "hinge",
                                  "rasgan", "ralsgan", "rahinge"])
def test_d_loss_is_the_sum_of_its_real_and_fake_parts(name):
  d, dr, df = get(name).d(REAL, FAKE)
  np.testing.assert_allclose(d, dr + df, rtol=1e-6)


def test_wgan_parts_and_lsgan_default_targets():
  _, dr, df = get("wgan").d(REAL, FAKE)
  np.testing.assert_allclose(dr, -REAL.mean(), rtol=1e-6)
  np.testing.assert_allclose(df, FAKE.mean(), rtol=1e-6)
  # Defaults: the 0-1 coding a=0, b=1, c=1 (Mao et al. 2017, eq. 9).
  _, dr, df = get("lsgan").d(REAL, FAKE)
  np.testing.assert_allclose(dr, 0.5 * np.mean((REAL - 1) ** 2), rtol=1e-6)
  np.testing.assert_allclose(df, 0.5 * np.mean(FAKE ** 2), rtol=1e-6)
  np.testing.assert_allclose(get("lsgan").g(FAKE),
                             0.5 * np.mean((FAKE - 1) ** 2), rtol=1e-6)


@pytest.mark.parametrize("flags, refused", [
    ({"gp.weight": 5.0}, "--gp.weight=5.0 has no effect here: --penalties "
                         "does not name gp"),
    ({"penalties": ("gp",), "r1.gamma": 1.0},
     "--r1.gamma=1.0 has no effect"),
    ({"pl.every": 2}, "--pl.every=2 has no effect here"),
    ({"ema.start": 100}, "--ema.start=100 has no effect here: --ema.decay "
                         "is 0"),
    ({"profile.start": 5}, "--profile.start=5 has no effect here: "
                           "--profile.steps is 0"),
    ({"parzen.valid_examples": 5, "parzen.sigma": 0.2},
     "--parzen.valid_examples=5 has no effect here"),
    (dict(**{"d.mbd_kernels": 50}), "--d.mbd_kernels=50 has no effect here"),
    (dict(**{"d.minibatch": "salimans", "d.mbstd_group_size": 2}),
     "--d.mbstd_group_size=2 has no effect here"),
    ({"penalties": ("gp", "r1"), "gp.weight": 1.0, "r1.gamma": 0.1,
      "r1.every": 4}, None),
    ({"ema.decay": 0.99, "ema.start": 10, "num_steps": 20}, None),
    ({"profile.steps": 2, "profile.start": 10}, None),
    ({"d.minibatch": "salimans", "d.mbd_kernels": 10,
      "d.mbd_kernel_dim": 3}, None),
])
def test_flags_without_effect_are_reported(flags, refused):
  from gan_jax import gan as gan_lib
  test_registry_is_extensible_from_outside()  # registers test_only_constant
  lines = gan_lib.inert_flags(tiny_config(**flags))
  if refused is None:
    assert lines == ()
  else:
    assert len(lines) == 1 and lines[0].startswith(refused), lines


def test_build_warns_about_flags_without_effect(caplog):
  from gan_jax import gan as gan_lib
  gan_lib.build(tiny_config(**{"ema.start": 100}))
  assert any("--ema.start=100 has no effect here" in r.getMessage()
             for r in caplog.records)


@pytest.mark.parametrize("loss, key, takes", [
    ("wgan", "loss.smoothing", "none"),
    ("hinge", "loss.b", "none"),
    ("ns", "loss.a", "smoothing"),
    ("lsgan", "loss.smoothing", "a, b, c"),
])
def test_a_key_the_loss_does_not_take_is_one_line(loss, key, takes):
  from gan_jax import gan as gan_lib
  with pytest.raises(UserError) as e:
    gan_lib.build(tiny_config(loss=loss, **{key: 0.9}))
  assert str(e.value) == (f"--{key}=0.9: --loss={loss} does not take it; "
                          f"its keys: {takes}")


def test_a_user_loss_takes_the_keys_it_names():
  """A loss registered from outside takes the keys it names (its own,
  defined with gan_jax.sections, or the built-ins'), and only those."""
  from gan_jax import sections
  if "test_only_scale" not in sections.SECTIONS["loss"]:
    sections.float_("loss", "test_only_scale", None, "A test's knob.",
                    owner="loss")
  name = "test_only_scaled_ns"
  if name not in losses.LOSSES:
    @losses.LOSSES.register(name)
    def _scaled(test_only_scale=1.0, smoothing=1.0):
      base = losses.LOSSES("ns", smoothing=smoothing)
      return losses.Loss(d=base.d, g=lambda f: test_only_scale * base.g(f))
  base = get("ns").g(FAKE)
  np.testing.assert_allclose(get(name).g(FAKE), base, rtol=1e-7)
  np.testing.assert_allclose(get(name, **{"loss.test_only_scale": 3.0}).g(
      FAKE), 3 * base, rtol=1e-6)
  with pytest.raises(UserError, match="its keys: smoothing, test_only_scale$"):
    get(name, **{"loss.c": 1.0})


def test_a_penalty_named_twice_is_refused_for_new_runs(tmp_path):
  # It would be applied twice: twice the weight the flags say.
  from gan_jax import gan as gan_lib
  from gan_jax import train
  cfg = tiny_config(loss="wgan", penalties=("gp", "r1", "gp"))
  with pytest.raises(UserError, match=r"^--penalties=gp,r1,gp names gp more "
                                      "than once"):
    train.train_and_evaluate(cfg, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()
  # A run saved before the check still loads (sample, evaluate, resume).
  gan_lib.build(cfg)


# The authors' code (AlexiaJM/RelativisticGAN, GAN_losses_iter.py), written
# again in numpy: y_pred = C(x_r), y_pred_fake = C(x_f).
def _ra_reference(name, real, fake):
  real, fake = real.astype(np.float64), fake.astype(np.float64)
  rel_r, rel_f = real - fake.mean(), fake - real.mean()
  if name == "rasgan":  # BCEWithLogits against 1 (y) and 0 (y2)
    d = (bce(rel_r, 1.0) + bce(rel_f, 0.0)) / 2
    g = (bce(rel_r, 0.0) + bce(rel_f, 1.0)) / 2
  elif name == "ralsgan":
    d = (np.mean((rel_r - 1) ** 2) + np.mean((rel_f + 1) ** 2)) / 2
    g = (np.mean((rel_r + 1) ** 2) + np.mean((rel_f - 1) ** 2)) / 2
  else:  # rahinge
    d = (np.mean(np.maximum(0, 1 - rel_r))
         + np.mean(np.maximum(0, 1 + rel_f))) / 2
    g = (np.mean(np.maximum(0, 1 + rel_r))
         + np.mean(np.maximum(0, 1 - rel_f))) / 2
  return d, g


@pytest.mark.parametrize("name", ["rasgan", "ralsgan", "rahinge"])
def test_relativistic_average_losses_match_the_authors_code(name):
  loss = get(name)
  assert loss.g_reads_real
  d_want, g_want = _ra_reference(name, REAL, FAKE)
  np.testing.assert_allclose(loss.d(REAL, FAKE)[0], d_want, rtol=1e-6)
  np.testing.assert_allclose(loss.g(FAKE, REAL), g_want, rtol=1e-6)
  # Shifting every logit by a constant changes nothing: only differences
  # between real and fake count.
  np.testing.assert_allclose(loss.d(REAL + 3, FAKE + 3)[0], d_want, rtol=1e-5)

"""Methods as plug-ins (gan_jax.methods): InfoGAN, ACGAN, their sections,
the label metrics, and the engine's guarantees for methods with more than
two networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from gan_jax import gan as gan_lib
from gan_jax import metrics as metrics_lib
from gan_jax import state as state_lib
from gan_jax import steps
from gan_jax.data import images as images_lib
from gan_jax.errors import UserError
from gan_jax.metrics import labels as labels_lib
from helpers import assert_one_line_error, run_module, tiny_config

IMAGE = dict(dataset="tiny_digits", generator="dcgan", discriminator="dcgan",
             **{"g.channels": 4, "d.channels": 4}, z_dim=4, batch_size=16,
             cross_replica_bn=True)


def leaves(tree):
  return jax.tree_util.tree_leaves(tree)


def digits(n=8):
  x = np.random.RandomState(1).randint(0, 256, (n, 28, 28, 1)).astype(
      np.uint8)
  return images_lib.ImageDataset(x, np.arange(n) % 10, 10, 0, "synthetic")


def train_images(cfg, n_devices=1, steps_per_call=2):
  """``steps_per_call`` steps on fixed images; (state, metrics)."""
  gan = gan_lib.build(cfg, digits())
  rng = np.random.RandomState(0)
  x = rng.uniform(-1, 1, (steps_per_call, cfg.d_steps, cfg.batch_size, 28,
                          28, 1)).astype(np.float32)
  y = rng.randint(0, 10, x.shape[:3]).astype(np.int32)
  mesh = jax.make_mesh((n_devices,), ("data",),
                       devices=jax.devices()[:n_devices])
  with jax.set_mesh(mesh):
    st = jax.jit(lambda: state_lib.create(gan, cfg.seed),
                 out_shardings=NamedSharding(mesh, P()))()
    sharding = NamedSharding(mesh, P(None, None, "data"))
    host = {"image": jax.device_put(x, sharding),
            "label": jax.device_put(y, sharding)}
    st, metrics = steps.make_train_step(gan, mesh, steps_per_call)(st, host)
  return gan, jax.device_get(st), jax.device_get(metrics)


# ------------------------------------------------------------------ InfoGAN


def test_infogan_latent_layout_and_codes():
  cfg = tiny_config(method="infogan", **IMAGE)
  gan = gan_lib.build(cfg, digits())
  assert gan.z_dim == 4 + 10 + 2
  z = np.asarray(gan.sample_z(jax.random.PRNGKey(0), (500,)))
  one_hot = z[:, 4:14]
  assert set(np.unique(one_hot)) == {0.0, 1.0}
  np.testing.assert_array_equal(one_hot.sum(1), 1)
  cat, cont = gan.codes(jnp.asarray(z))
  np.testing.assert_array_equal(np.asarray(cat), one_hot.argmax(1))
  assert len(np.unique(np.asarray(cat))) == 10  # all values drawn
  assert np.abs(np.asarray(cont)).max() <= 1 and cont.shape == (500, 2)
  _, y, labels = gan.eval_inputs(jax.random.PRNGKey(1), 7)
  assert y is None and labels.shape == (7,)

  grids = gan.latent_traversals(jax.random.PRNGKey(2))
  assert set(grids) == {"code_categorical", "code_continuous_0",
                        "code_continuous_1"}
  z, _, rows = grids["code_categorical"]
  z = np.asarray(z).reshape(rows, 10, -1)
  np.testing.assert_array_equal(z[:, :, 4:14].argmax(-1),
                                np.repeat(np.arange(10)[:, None], 10, 1))
  # Along a column only the code changes.
  np.testing.assert_array_equal(z[0, :, :4], z[5, :, :4])
  z, _, rows = grids["code_continuous_1"]
  z = np.asarray(z).reshape(rows, 10, -1)
  np.testing.assert_allclose(z[:, 0, 15], np.linspace(-1, 1, 10), rtol=1e-6)
  np.testing.assert_array_equal(z[0, :, :15], z[9, :, :15])


def test_infogan_trains_q_with_d_and_8_devices_equal_1():
  cfg = tiny_config(method="infogan", **IMAGE)
  gan, st1, m1 = train_images(cfg, 1)
  assert gan.d_networks == ("D", "Q") and set(st1.params) == {"G", "D", "Q"}
  st0 = jax.device_get(jax.jit(lambda: state_lib.create(gan, cfg.seed))())
  assert all(not np.array_equal(a, b) for a, b in
             zip(leaves(st0.params["Q"]), leaves(st1.params["Q"])))
  for k in ("d_info/cat_ce", "d_info/cont_ce", "g_info/cat_ce",
            "g_info/cont_ce"):
    assert np.all(np.isfinite(m1[k])), k
  # At initialization Q knows nothing: no better than chance (log 10).
  assert m1["d_info/cat_ce"][0] > 0.8 * np.log(10)
  _, st8, m8 = train_images(cfg, 8)
  for a, b in zip(leaves((st1.params, m1)), leaves((st8.params, m8))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_infogan_needs_a_code_and_a_fake_only_g_loss():
  with pytest.raises(UserError, match="needs a code"):
    gan_lib.build(tiny_config(method="infogan", **IMAGE,
                              **{"infogan.categories": 0,
                                 "infogan.continuous": 0}), digits())
  with pytest.raises(UserError, match="reads real data too"):
    gan_lib.build(tiny_config(method="infogan", loss="rasgan", **IMAGE),
                  digits())


# -------------------------------------------------------------------- ACGAN


def test_acgan_classifier_on_an_unconditional_d():
  cfg = tiny_config(method="acgan", **IMAGE)
  gan, st, m = train_images(cfg, 1)
  assert gan.num_classes == 10 and gan.d_classes == 0
  assert set(st.params) == {"G", "D", "C"}
  # D has no class embedding (the classifier carries the classes); G has.
  assert not any("Embed" in jax.tree_util.keystr(p) for p, _ in
                 jax.tree_util.tree_leaves_with_path(st.params["D"]))
  assert st.params["C"]["Dense_0"]["kernel"].shape[-1] == 10
  for k in ("d_class_ce_real", "d_class_ce_fake", "g_class_ce"):
    assert np.all(np.isfinite(m[k])) and abs(m[k][0] - np.log(10)) < 0.3, k
  _, st8, m8 = train_images(cfg, 8)
  for a, b in zip(leaves((st.params, m)), leaves((st8.params, m8))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_acgan_needs_labels():
  with pytest.raises(UserError, match="labelled dataset"):
    gan_lib.build(tiny_config(method="acgan"))  # the ring has no labels


# ------------------------------------------------------------ label metrics


def test_cluster_accuracy_is_invariant_to_renaming_the_codes():
  rng = np.random.default_rng(0)
  classes = rng.integers(0, 10, 1000)
  logits = np.eye(10)[classes] * 5
  perm = rng.permutation(10)
  assert labels_lib.cluster_accuracy(logits, perm[classes]) == 1.0
  assert labels_lib.class_accuracy(logits, classes) == 1.0
  assert labels_lib.class_accuracy(logits, perm[classes]) < 0.3
  # Two codes sharing a class: one of them is matched, the other an error.
  codes = np.array([0, 1, 2, 2])
  preds = np.eye(3)[[0, 1, 2, 1]]
  assert labels_lib.cluster_accuracy(preds, codes) == 0.75
  # Against scipy's assignment on a random confusion matrix, by brute force
  # over permutations of 4 codes.
  import itertools  # pylint: disable=g-import-not-at-top
  codes = rng.integers(0, 4, 200)
  logits = rng.normal(size=(200, 4))
  pred = logits.argmax(1)
  best = max(np.mean(np.array(p)[codes] == pred)
             for p in itertools.permutations(range(4)))
  assert labels_lib.cluster_accuracy(logits, codes) == pytest.approx(best)


def test_label_metrics_are_registered_and_need_labels():
  for name in ("class_accuracy", "cluster_accuracy"):
    assert metrics_lib.LABELS in metrics_lib.METRICS.get(name).needs


# ------------------------------------------------------ sections, CLI


def _main(tmp_path, *flags):
  return run_module(
      "gan_jax.main", "--extra_modules=tiny_image_data",
      "--dataset=tiny_digits", "--generator=dcgan", "--discriminator=dcgan",
      "--g.channels=4", "--d.channels=4", "--z_dim=4", "--batch_size=8",
      "--num_steps=2", "--log_every=1", "--checkpoint_every=0",
      "--noprogress", f"--workdir={tmp_path / 'run'}", *flags)


def test_a_misspelled_section_key_is_one_line(tmp_path):
  r = _main(tmp_path, "--method=infogan", "--infogan.categries=5")
  line = assert_one_line_error(r)
  assert line == ("error: --infogan.categries: section 'infogan' has no key "
                  "'categries'; its keys: categories, continuous, "
                  "info_weight, q_hidden"), line


def test_another_methods_section_is_one_line(tmp_path):
  r = _main(tmp_path, "--method=acgan", "--infogan.categories=5")
  line = assert_one_line_error(r)
  assert "--infogan.categories configures --method=infogan" in line, line


def test_infogan_run_writes_traversals_and_records_its_section(tmp_path):
  r = _main(tmp_path, "--method=infogan", "--infogan.categories=3")
  assert r.returncode == 0, r.stderr[-2000:]
  run = tmp_path / "run"
  for name in ("code_categorical", "code_continuous_0", "code_continuous_1"):
    assert (run / "samples" / f"{name}_step_0000002.png").exists(), name
  flags = (run / "flags.txt").read_text()
  assert "--infogan.categories=3" in flags and "--method=infogan" in flags
  assert "--infogan.info_weight=1.0" in flags


def test_label_metric_without_labels_is_one_line(tmp_path):
  r = run_module("gan_jax.main", "--flagfile=experiments/dcgan_mnist.flags",
                 "--g.channels=4", "--d.channels=4", "--num_steps=1",
                 "--eval.every=1", "--eval.metrics=class_accuracy",
                 "--noprogress", f"--workdir={tmp_path / 'run'}",
                 f"--tfds_data_dir={tmp_path / 'tfds'}")
  # (after the lines that prepare MNIST once)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
  line = r.stderr.strip().splitlines()[-1]
  assert line.startswith("error: --eval.metrics=class_accuracy scores "
                         "samples against their labels"), line


def test_section_knob_change_on_resume_is_refused(tmp_path):
  assert _main(tmp_path, "--method=acgan", "--checkpoint_every=2"
               ).returncode == 0
  r = _main(tmp_path, "--method=acgan", "--acgan.class_weight=2",
            "--num_steps=4")
  line = assert_one_line_error(r)
  assert "acgan.class_weight" in line, line


def test_section_helpers_define_dotted_flags_read_back_as_knobs():
  from gan_jax import flags as flags_lib  # pylint: disable=g-import-not-at-top
  from gan_jax import sections  # pylint: disable=g-import-not-at-top
  sections.enum("tsec", "mode", "a", ["a", "b"], "A test knob.")
  sections.integer("tsec", "size", 3, "Another.", bounds=">= 1")
  try:
    _check_tsec(flags_lib, sections)
  finally:  # the worker's other tests must not see (or record) them
    for key in ("mode", "size"):
      name = f"tsec.{key}"
      delattr(flags_lib.FLAGS, name)
      flags_lib.SAFE.pop(name)
      flags_lib.BOUNDS.pop(name, None)
    sections.SECTIONS.pop("tsec")
    sections.KINDS.pop("tsec")


def _check_tsec(flags_lib, sections):
  cfg = flags_lib.defaults(**{"tsec.mode": "b"})
  assert sections.knobs(cfg, "tsec") == {"mode": "b", "size": 3}
  assert sections.unknown_key_line("--tsec.sise=4") == (
      "--tsec.sise: section 'tsec' has no key 'sise'; its keys: mode, size")
  with pytest.raises(UserError, match="configures --method=tsec"):
    sections.check_unused(cfg, "gan")
  sections.check_unused(cfg.replace(**{"tsec.mode": "a"}), "gan")
  with pytest.raises(UserError, match="must be >= 1"):
    flags_lib.check_bounds(cfg.replace(**{"tsec.size": 0}))

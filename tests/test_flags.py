"""gan_jax.flags: numeric flags' bounds, checked when flags are parsed and
when a GAN is built from a Config; every experiment flagfile is in bounds."""

import copy
import glob
import math
import os
import re

import pytest
from absl import flags

from gan_jax import flags as flags_lib
from gan_jax import gan as gan_lib
from gan_jax import models
from gan_jax import sections
from gan_jax.errors import UserError
from helpers import REPO, tiny_config


def private_flags():
  """A copy of gan_jax's flags (validators included) to parse into."""
  fv = flags.FlagValues()
  for name in list(flags_lib.SAFE) + sorted(flags_lib.NOT_IN_CONFIG):
    fv[name] = copy.deepcopy(flags_lib.FLAGS[name])
  return fv


@pytest.mark.parametrize("text,inside,outside", [
    (">= 1", [1, 2, 10**9], [0, -1]),
    ("> 0", [1e-12, 3.0], [0.0, -1e-12]),
    ("[0, 1)", [0.0, 0.5, 0.999], [1.0, -0.1, 2.0]),
    ("(0, 1]", [1e-9, 1.0], [0.0, 1.1]),
])
def test_bounds_intervals(text, inside, outside):
  bounds = flags_lib.Bounds.parse(text)
  assert all(v in bounds for v in inside)
  assert not any(v in bounds for v in outside)


def test_bad_bounds_text_is_refused():
  with pytest.raises(ValueError):
    flags_lib.Bounds.parse("between 0 and 1")


def test_defaults_are_in_bounds_and_every_numeric_flag_is_checked():
  for name, bounds in flags_lib.BOUNDS.items():
    default = flags_lib.FLAGS[name].default
    assert default is None or default in bounds, name
  # Learning rates, betas, dropouts, widths and counts all have bounds.
  for name in ("g_optimizer.lr", "d_optimizer.lr", "g_optimizer.b1",
               "d_optimizer.b2", "ema.decay", "d.dropout",
               "z_dim", "g.channels", "batch_size", "log_every",
               "steps_per_loop", "num_devices", "eval.num_samples", "pack"):
    assert name in flags_lib.BOUNDS, name


@pytest.mark.parametrize("arg,message", [
    ("--g_optimizer.lr=-1", "flag --g_optimizer.lr=-1.0: must be >= 0"),
    ("--d_optimizer.lr=nan", "flag --d_optimizer.lr=nan: must be a finite number"),
    ("--loss.smoothing=inf", "must be a finite number"),
    ("--g_optimizer.b1=1", "flag --g_optimizer.b1=1.0: must be in [0, 1)"),
    ("--ema.decay=1.5", "must be in [0, 1)"),
    ("--z_dim=0", "flag --z_dim=0: must be >= 1"),
    ("--num_devices=-1", "must be >= 0"),
    ("--log_every=0", "must be >= 1"),
])
def test_out_of_bounds_values_fail_at_parse_time(arg, message):
  fv = private_flags()
  with pytest.raises(flags.IllegalFlagValueError) as e:
    fv(["prog", arg])
  assert message in str(e.value)


def test_in_bounds_values_parse():
  fv = private_flags()
  fv(["prog", "--g_optimizer.lr=3e-4", "--g_optimizer.b1=0", "--ema.decay=0.999",
      "--loss.smoothing=0.9", "--seed=-3", "--step=5"])
  fv(["prog", "--seed=4294967295"])
  assert getattr(fv, "g_optimizer.lr") == 3e-4 and getattr(fv, "ema.decay") == 0.999 and fv.step == 5


@pytest.mark.parametrize("overrides,message", [
    (dict(**{"g_optimizer.lr": -1e-4}), "--g_optimizer.lr=-0.0001 must be >= 0"),
    ({"d_optimizer.b2": float("nan")},
     "--d_optimizer.b2=nan must be a finite number"),
    (dict(d_steps=0), "--d_steps=0 must be in [1, 100]"),
    (dict(pack=0), "--pack=0 must be >= 1"),
    (dict(num_seeds=0), "--num_seeds=0 must be >= 1"),
    ({"unrolled.steps": 0}, "--unrolled.steps=0 must be in [1, 100]"),
    ({"unrolled.steps": 1000}, "--unrolled.steps=1000 must be in [1, 100]"),
    ({"madgan.generators": 1}, "--madgan.generators=1 must be >= 2"),
    (dict(seed=-2**31 - 1), "--seed=-2147483649 must be in [-2147483648, "
     "4294967295]"),
    (dict(seed=2**32), "--seed=4294967296 must be in [-2147483648, "
     "4294967295]"),
    (dict(num_steps=2**31), "--num_steps=2147483648 must be at most"),
    ({"profile.start": -10**20}, "--profile.start="
     "-100000000000000000000 must be at most 2147483647 in magnitude"),
])
def test_configs_built_in_code_are_checked_too(overrides, message):
  with pytest.raises(UserError, match="^" + re.escape(message)):
    gan_lib.build(tiny_config(**overrides))


def test_check_bounds_takes_mappings():
  flags_lib.check_bounds({"g_optimizer.lr": 1e-3, "seed": 1, "step": None})
  with pytest.raises(UserError, match="--d.dropout=1.0 must be in"):
    flags_lib.check_bounds({"d.dropout": 1.0})
  assert flags_lib.out_of_bounds("g_optimizer.lr", math.inf) == (
      "must be a finite number")


@pytest.mark.parametrize("path", sorted(
    os.path.relpath(p, REPO) for p in
    glob.glob(os.path.join(REPO, "experiments", "**", "*.flags"),
              recursive=True)))
def test_every_experiment_flagfile_parses_in_bounds(monkeypatch, path):
  monkeypatch.chdir(REPO)  # nested --flagfile paths are relative to the repo
  fv = private_flags()
  fv(["prog", f"--flagfile={path}"])  # runs the bounds validators
  assert any(fv[n].present for n in fv), f"{path} sets no flag"
  cfg = flags_lib.Config({n: fv[n].value for n in flags_lib.SAFE})
  flags_lib.check_bounds(cfg)
  # No flag set that does nothing, by the rules and for the data's kind;
  # the architectures take every key of their sections that is set (built
  # on the dataset's shape; the data itself is not loaded: CIFAR-10 is not
  # available here).
  if cfg.dataset in TOY_DATASETS:
    kind, shape = "toy", (2,)
  else:
    kind, shape = "image", IMAGE_SHAPES[cfg.dataset]
    size = getattr(cfg, "data.image_size")
    if size:
      shape = (size, size, shape[2])
  for side in ("g", "d"):
    models.build(side, cfg, shape, 10 if cfg.conditional else 0)
  assert gan_lib.inert_flags(cfg, kind) == ()


TOY_DATASETS = ("ring", "grid", "8gaussians", "25gaussians", "swissroll")
IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
                "stacked_mnist": (28, 28, 3), "cifar10": (32, 32, 3)}


def test_a_key_the_architecture_does_not_take_is_one_line():
  for given, line in (
      ({"g.channels": 32}, "--g.channels=32: --generator=pacgan_mlp does not "
       "take it; its keys: batchnorm, hidden, init, layers"),
      ({"d.conv": "patches"}, "--d.conv=patches: --discriminator="
       "pacgan_maxout does not take it; its keys: hidden, init, layers, "
       "mbd_kernel_dim, mbd_kernels, mbstd_group_size, minibatch, norm, "
       "pieces")):
    with pytest.raises(UserError) as e:
      gan_lib.build(tiny_config(**given))
    assert str(e.value) == line


def test_a_data_key_the_dataset_does_not_take_is_one_line():
  with pytest.raises(UserError) as e:
    gan_lib.build(tiny_config(**{"data.image_size": 32}))
  assert str(e.value) == ("--data.image_size=32: --dataset=ring does not "
                          "take it; its keys: none")


def test_a_key_no_architecture_has_is_refused_when_parsed():
  line = sections.unknown_key_line("--g.widht=3")
  assert line == ("--g.widht: section 'g' has no key 'widht'; its keys: "
                  + ", ".join(sorted(sections.SECTIONS["g"])))


def test_inert_flags_by_rules_and_data_kind(caplog):
  # A metric's section does nothing where the metric is not evaluated:
  # on toy data (its mode metrics), or images with other --eval.metrics.
  cfg = tiny_config(dataset="mnist", **{"kid.subsets": 50,
                                        "parzen.sigma": 0.2})
  assert gan_lib.inert_flags(cfg, "toy") == (
      "--kid.subsets=50 has no effect here: the run does not evaluate kid "
      "(--eval.metrics)",
      "--parzen.sigma=0.2 has no effect here: the run does not evaluate "
      "parzen (--eval.metrics)")
  assert gan_lib.inert_flags(cfg, "image") == (  # MNIST's: fid, kid, ...
      "--parzen.sigma=0.2 has no effect here: the run does not evaluate "
      "parzen (--eval.metrics)",)
  assert gan_lib.inert_flags(cfg.replace(**{"eval.metrics": ("parzen",)}),
                             "image") == (
      "--kid.subsets=50 has no effect here: the run does not evaluate kid "
      "(--eval.metrics)",)
  # DCGAN's D at 14 px has one convolution, the (never normalized) input
  # layer: --d.norm does nothing there, unless spectral (it then acts on the
  # convolution and the output layer).
  for norm, inert in (("layer", True), ("spectral", False)):
    cfg = tiny_config(generator="dcgan", discriminator="dcgan",
                      **{"d.norm": norm, "d.channels": 4})
    for size, small in ((14, True), (28, False)):
      caplog.clear()
      models.build("d", cfg, (size, size, 1), 0)
      warned = f"--d.norm={norm} has no effect here" in caplog.text
      assert warned == (inert and small), (norm, size)
  # List flags: an empty tuple is the default [], a list reads as the flag.
  assert gan_lib.inert_flags(tiny_config(), "toy") == ()
  assert gan_lib.inert_flags(tiny_config(**{"eval.metrics": ("fid", "kid")}),
                             "toy") == (
      "--eval.metrics=fid,kid has no effect here: toy data gets its mode "
      "metrics",)


def test_an_architecture_from_outside_brings_its_own_knob():
  """A user generator reuses --g.hidden by taking ``hidden`` and defines
  --g.test_only_gain; the run's knobs reach its factory, unset ones keep
  the factory's defaults."""
  if "test_only_gain" not in sections.SECTIONS["g"]:
    models.knob("g", "test_only_gain", "float_", "A test's knob.")
  name = "test_only_scaled_mlp"
  if name not in models.GENERATORS:
    @models.GENERATORS.register(name)
    def _scaled(shape, num_classes, common, *, hidden=7,
                test_only_gain=1.0):
      del num_classes
      return models.mlp.MLPGenerator(out_shape=shape, hidden=hidden,
                                     layers=1, dtype=common.dtype,
                                     batchnorm=test_only_gain > 0)
  cfg = flags_lib.defaults(generator=name)
  g = models.build("g", cfg, (2,), 0)
  assert g.hidden == 7 and g.batchnorm
  g = models.build("g", cfg.replace(**{"g.hidden": 5,
                                       "g.test_only_gain": -1.0}), (2,), 0)
  assert g.hidden == 5 and not g.batchnorm
  with pytest.raises(UserError, match="its keys: hidden, test_only_gain$"):
    models.build("g", cfg.replace(**{"g.layers": 2}), (2,), 0)


def test_directory_flags_refuse_urls():
  """--workdir and --sweep_dir are written with file operations: a URL
  would become a local 'gs:' folder, so it is refused when parsed."""
  assert flags_lib.not_a_url("runs/a") is None
  assert flags_lib.not_a_url("/mnt/gcs/runs/a") is None
  assert flags_lib.not_a_url("runs/a:b://c") is None  # a path, not a URL
  assert "not a URL" in flags_lib.not_a_url("gs://bucket/run")
  for name in ("workdir", "sweep_dir"):
    fv = private_flags()
    with pytest.raises(flags.IllegalFlagValueError, match="not a URL"):
      fv(["prog", f"--{name}=s3://bucket/run"])


def test_saved_runs_record_the_config_schema_and_others_are_refused(
    tmp_path):
  """A checkpoint's config and flags.txt record flags.SCHEMA_VERSION; a run
  of another schema (none recorded: schema 0) is refused in one line naming
  the one that wrote it. A flag added since the run was saved (no bump)
  reads its default; flags.txt stays a flagfile that replays the run."""
  cfg = flags_lib.defaults(**{"g.hidden": 32}, penalties=("r1",))
  record = flags_lib.config_record(cfg)
  assert record[flags_lib.SCHEMA_KEY] == flags_lib.SCHEMA_VERSION
  assert flags_lib.saved_config(record, "RUN") == cfg
  del record["d.pool"]
  assert flags_lib.saved_config(record, "RUN") == cfg
  version = flags_lib.SCHEMA_VERSION
  with pytest.raises(UserError) as e:
    flags_lib.saved_config(cfg.to_dict(), "RUN")
  assert str(e.value) == (
      "RUN was written by gan_jax config schema 0 (before versions were "
      f"recorded); this gan_jax reads schema {version}: train it again, or "
      "use the gan_jax commit that wrote it")
  with pytest.raises(UserError, match=f"^RUN was written by gan_jax config "
                     f"schema {version + 1}; this gan_jax reads schema "
                     f"{version}: "):
    flags_lib.saved_config({**record, flags_lib.SCHEMA_KEY: version + 1},
                           "RUN")
  path = tmp_path / "flags.txt"
  path.write_text("\n".join(flags_lib.flagfile_lines(cfg)) + "\n")
  assert path.read_text().startswith(f"# gan_jax config schema {version}\n")
  assert flags_lib.flagfile_schema(str(path)) == version
  fv = private_flags()
  fv(["prog", f"--flagfile={path}"])
  assert getattr(fv, "g.hidden") == 32 and fv.penalties == ["r1"]
  path.write_text("\n".join(flags_lib.serialize(cfg)) + "\n")  # before
  assert flags_lib.flagfile_schema(str(path)) is None
  assert "unit_pixels" not in flags_lib.SAFE  # schema 1 removed it


def test_unknown_eval_metrics_are_refused_on_any_data():
  """A typo in --eval.metrics on toy data only warned (toy runs use their
  mode metrics), to fail on the next image run."""
  with pytest.raises(UserError, match="unknown metric 'fdi'"):
    flags_lib.check_config(tiny_config(**{"eval.metrics": ("fdi",)}), 1)
  flags_lib.check_config(tiny_config(**{"eval.metrics": ("fid", "kid")}), 1)

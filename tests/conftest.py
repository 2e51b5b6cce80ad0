"""Test setup: 8 host CPU devices for data-parallel tests."""

import os
import tempfile

# Must happen before jax is imported anywhere. In-process tests compile with
# XLA's default optimizations, as users run; CLI subprocesses use
# helpers.FAST_COMPILE. (The unrolled-GAN gradient once turned NaN at
# --xla_backend_optimization_level=0: jnp.max's tie-count division in the
# maxout layers, fixed by layers.maxout and covered by
# test_unrolled_gradient_is_finite_without_xla_optimizations.)
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag
                             ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A persistent compilation cache shared by the test processes and the CLI
# subprocesses they start: identical programs (the same tiny config trained
# twice, a resumed run) compile once. Keyed by the program, so it is safe to
# keep between runs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(),
                                   "gan_jax_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


import pytest  # noqa: E402


@pytest.fixture(scope="module", name="mnist_data_dir")
def fixture_mnist_data_dir(tmp_path_factory):
  """A tfds data dir with MNIST prepared offline from ../shared/data."""
  from gan_jax.data import images  # pylint: disable=import-outside-toplevel
  if images.default_manual_dir("mnist") is None:
    pytest.skip("../shared/data/mnist absent")
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  images._load.cache_clear()  # pylint: disable=protected-access
  try:
    images.load_arrays("mnist", "train", data_dir=data_dir)
  finally:
    images._load.cache_clear()  # pylint: disable=protected-access
  return data_dir

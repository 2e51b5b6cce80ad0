"""The 2-D toy MLPs: initialization per architecture (--g.init, --d.init)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import flags
from helpers import discriminator, generator


@pytest.mark.parametrize("init, g_name, d_name, expected", [
    # The PacGAN authors' config: weights_init_std 0.02 for G and D.
    (None, "pacgan_mlp", "pacgan_maxout", "normal_0.02"),
    (None, "mlp", "mlp", "lecun_normal"),
    ("lecun_normal", "pacgan_mlp", "pacgan_maxout", "lecun_normal"),
    ("he_normal", "mlp", "mlp", "he_normal"),
])
def test_kernel_initialization(init, g_name, d_name, expected):
  cfg = flags.defaults(**{"g.init": init, "d.init": init, "g.hidden": 64,
                          "d.hidden": 32, "g.layers": 2, "d.layers": 2})
  if d_name == "pacgan_maxout":
    cfg = cfg.replace(**{"d.pieces": 3})
  x = jnp.ones((4, 2))
  for module in (generator(g_name, cfg, (2,), 0),
                 discriminator(d_name, cfg, (2,), 0)):
    variables = module.init(jax.random.PRNGKey(0), x, train=False)
    kernels = [leaf for leaf in jax.tree.leaves(variables["params"])
               if leaf.ndim == 2]
    assert len(kernels) == 3
    for k in kernels:
      fan_in = k.shape[0]
      want = {"normal_0.02": 0.02, "lecun_normal": (1 / fan_in) ** 0.5,
              "he_normal": (2 / fan_in) ** 0.5}[expected]
      # Truncated normals (lecun/he) have a slightly smaller std; the
      # first layer's 2-row kernels are small samples.
      tol = 0.5 if fan_in == 2 else 0.2
      assert abs(float(np.std(k)) - want) < tol * want, (k.shape, expected)
    biases = [leaf for path, leaf in
              jax.tree_util.tree_leaves_with_path(variables["params"])
              if "BatchNorm" not in jax.tree_util.keystr(path)
              and jax.tree_util.keystr(path).endswith("['bias']")]
    assert biases and all(float(jnp.max(jnp.abs(b))) == 0.0 for b in biases)

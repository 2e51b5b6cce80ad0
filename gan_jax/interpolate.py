"""Latent interpolation: linear and spherical paths between noise vectors.

Spherical linear interpolation (slerp; Shoemake 1985) follows the great
circle from z0 to z1, so intermediate points keep the norm typical of
high-dimensional Gaussian noise; the straight line between two such points
passes through lower-norm regions the generator rarely saw (White 2016,
"Sampling Generative Networks", Sec. 2.1).

For uniform noise in [-1, 1]^d the great circle leaves the cube (its
weights sin((1-t) w) / sin w exceed 1 - t: 5% of the coordinates of random
100-d pairs land outside, up to 1.56), so ``strips(..., support=(-1, 1))``
clips the spherical path to the prior's support; the straight line never
leaves it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax.numpy as jnp


def lerp(z0, z1, t):
  """(1 - t) z0 + t z1; ``t`` broadcasts against z0/z1's leading axes."""
  return (1.0 - t) * z0 + t * z1


def slerp(z0, z1, t, eps: float = 1e-7, min_sin: float = 1e-3):
  """sin((1-t) w) / sin w z0 + sin(t w) / sin w z1, w the angle z0, z1.

  Falls back to ``lerp`` for nearly (anti)parallel pairs (sin w below
  ``min_sin``: in float32 the angle of such pairs is rounding, and dividing
  by its sine blew a near-antipodal pair up to |z| ~ 2000). The endpoints
  are z0 and z1 exactly.
  """
  n0 = z0 / jnp.maximum(jnp.linalg.norm(z0, axis=-1, keepdims=True), eps)
  n1 = z1 / jnp.maximum(jnp.linalg.norm(z1, axis=-1, keepdims=True), eps)
  omega = jnp.arccos(jnp.clip(jnp.sum(n0 * n1, -1, keepdims=True), -1, 1))
  so = jnp.sin(omega)
  degenerate = so < min_sin
  safe = jnp.where(degenerate, 1.0, so)
  out = (jnp.sin((1.0 - t) * omega) / safe * z0
         + jnp.sin(t * omega) / safe * z1)
  out = jnp.where(degenerate, lerp(z0, z1, t), out)
  return jnp.where(t == 0, z0, jnp.where(t == 1, z1, out))


def strips(z0, z1, steps: int,
           support: Optional[Tuple[float, float]] = None):
  """Linear and spherical paths, each (n, steps, d), from z0 (n, d) to z1
  (n, d), endpoints included; ``support`` (a bounded prior's (low, high))
  clips the spherical path to it."""
  t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
  a, b = z0[:, None, :], z1[:, None, :]
  spherical = slerp(a, b, t)
  if support is not None:
    spherical = jnp.clip(spherical, *support)
  return lerp(a, b, t), spherical


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  sys.stderr.write("error: gan_jax.interpolate is a library module; "
                   "interpolations are written by python -m gan_jax.sample "
                   "--workdir=DIR --interpolate --out=FILE.png\n")
  sys.exit(2)

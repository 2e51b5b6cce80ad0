"""Latent interpolation: linear and spherical paths between noise vectors.

Spherical linear interpolation (slerp; Shoemake 1985) follows the great
circle from z0 to z1, so intermediate points keep the norm typical of
high-dimensional Gaussian noise; the straight line between two such points
passes through lower-norm regions the generator rarely saw (White 2016,
"Sampling Generative Networks", Sec. 2.1).
"""

from __future__ import annotations

import jax.numpy as jnp


def lerp(z0, z1, t):
  """(1 - t) z0 + t z1; ``t`` broadcasts against z0/z1's leading axes."""
  return (1.0 - t) * z0 + t * z1


def slerp(z0, z1, t, eps: float = 1e-7):
  """sin((1-t) w) / sin w z0 + sin(t w) / sin w z1, w the angle z0, z1.

  Falls back to ``lerp`` for (anti)parallel pairs, where sin w ~ 0.
  """
  n0 = z0 / jnp.maximum(jnp.linalg.norm(z0, axis=-1, keepdims=True), eps)
  n1 = z1 / jnp.maximum(jnp.linalg.norm(z1, axis=-1, keepdims=True), eps)
  omega = jnp.arccos(jnp.clip(jnp.sum(n0 * n1, -1, keepdims=True), -1, 1))
  so = jnp.sin(omega)
  safe = jnp.where(so < eps, 1.0, so)
  out = (jnp.sin((1.0 - t) * omega) / safe * z0
         + jnp.sin(t * omega) / safe * z1)
  return jnp.where(so < eps, lerp(z0, z1, t), out)


def strips(z0, z1, steps: int):
  """Linear and spherical paths, each (n, steps, d), from z0 (n, d) to z1
  (n, d), endpoints included."""
  t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
  a, b = z0[:, None, :], z1[:, None, :]
  return lerp(a, b, t), slerp(a, b, t)


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  sys.stderr.write("error: gan_jax.interpolate is a library module; "
                   "interpolations are written by python -m gan_jax.sample "
                   "--workdir=DIR --interpolate --out=FILE.png\n")
  sys.exit(2)

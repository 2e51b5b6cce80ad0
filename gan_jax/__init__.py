"""gan_jax: generative adversarial networks in JAX/Flax.

Pure compiled G/D update steps, data-parallel over a device mesh, an immutable
train state, absl flagfile experiments. Entry point: ``python -m gan_jax.main``.
"""

__version__ = "0.1.0"

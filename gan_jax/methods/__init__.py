"""GAN methods, chosen by name (``--method``): each one module.

A method declares its networks, their initialisation, its D-side and G-side
objectives, its extra train state and its knobs (``methods/base.py``); the
engine (``gan_jax.steps``) runs any of them. Register your own from a
module passed to ``--extra_modules`` (docs/extending.md)::

    from gan_jax import methods

    @methods.METHODS.register("my_method")
    def my_method(cfg, dataset, my_knob: float = 1.0): ...
"""

from gan_jax.methods.base import METHODS, Method, cross_entropy

# Importing the modules registers their methods.
from gan_jax.methods import gan  # noqa: E402,F401
from gan_jax.methods import madgan, unrolled  # noqa: E402,F401
from gan_jax.methods import acgan, infogan  # noqa: E402,F401

__all__ = ["METHODS", "Method", "cross_entropy"]

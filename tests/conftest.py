"""Test setup: 8 host CPU devices for data-parallel tests."""

import os

# Must happen before jax is imported anywhere.
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag
                             ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

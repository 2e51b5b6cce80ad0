"""Named registries: losses, penalties, architectures, datasets, metrics.

A registry maps a flag value to a factory. Users extend one from their own
module (loaded with ``--extra_modules=my.module``) without editing the package::

    from gan_jax import losses

    @losses.LOSSES.register("my_loss")
    def my_loss(cfg): ...
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Dict, Iterator, Optional

from gan_jax.errors import USER_FILES, UserError, note_user_code


class Registry:
  """A name -> object table with a one-line error for unknown names."""

  def __init__(self, kind: str, returns: Any = None):
    """``returns``: the type (or tuple of types) every factory must return;
    a user factory that returns something else fails with one line naming
    it, not deep inside the compiled step."""
    self.kind = kind
    self.returns = returns
    self._items: Dict[str, Any] = {}

  def register(self, name: str, obj: Any = None, *, override: bool = False):
    """Registers ``obj`` under ``name``; usable as a decorator."""

    def add(o):
      if name in self._items and not override:
        raise ValueError(f"{self.kind} {name!r} is already registered "
                         f"(register(..., override=True) replaces it)")
      self._items[name] = o
      note_user_code(o)  # its errors are the user's (errors.call_guarded)
      return o

    return add if obj is None else add(obj)

  def get(self, name: str) -> Any:
    try:
      return self._items[name]
    except KeyError:
      raise UserError(
          f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}"
      ) from None

  def names(self):
    return sorted(self._items)

  __getitem__ = get  # REGISTRY["name"], with get's one-line error

  def __contains__(self, name: str) -> bool:
    return name in self._items

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())

  def __call__(self, name: str, *args, **kwargs) -> Any:
    """Looks ``name`` up and calls the factory with the given arguments."""
    factory: Callable[..., Any] = self.get(name)
    where = _user_source(factory)
    if where is not None:
      # A user factory that cannot take gan_jax's arguments: one line
      # naming it, not a TypeError raised at gan_jax's call.
      try:
        inspect.signature(factory).bind(*args, **kwargs)
      except TypeError as e:
        raise UserError(
            f"{self.kind} {name!r} ({where}) cannot be called as gan_jax "
            f"calls it, with {len(args)} positional argument(s)"
            + (f" and {', '.join(kwargs)}" if kwargs else "")
            + f": {e}") from None
      except ValueError:  # no signature to check (a builtin)
        pass
    obj = factory(*args, **kwargs)
    if self.returns is not None and not isinstance(obj, self.returns):
      wanted = self.returns if isinstance(self.returns, tuple) else (
          self.returns,)
      raise UserError(
          f"{self.kind} {name!r}: its factory returned "
          f"{type(obj).__name__}, not "
          f"{' or '.join(f'{t.__module__}.{t.__qualname__}' for t in wanted)}")
    return obj


def _user_source(obj) -> Optional[str]:
  """``file:line`` of a factory registered from the user's code, else
  None."""
  try:
    filename = inspect.getsourcefile(obj)
    line = inspect.getsourcelines(obj)[1]
  except (TypeError, OSError):
    return None
  if filename is None or os.path.abspath(filename) not in USER_FILES:
    return None
  return f"{filename}:{line}"

"""Orbax checkpoints, behind this one module.

Layout of ``WORKDIR/checkpoints/<step>/``:
  ``state/``  the ``TrainState`` pytree (orbax StandardSave: step, rng,
             g_params, g_state, d_params, d_state, g_opt_state, d_opt_state,
             ema_params);
  ``config/`` JSON of the fully resolved flags the run was started with.
A step directory appears only once complete (orbax writes to a temporary
directory and renames it), so a kill -9 mid-save leaves the previous
checkpoint as the latest.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

from gan_jax.errors import UserError


class Checkpoints:
  """Saves every ``save_every`` steps, keeps the last ``keep``, restores the
  newest readable checkpoint."""

  def __init__(self, directory: str, *, save_every: int, keep: int = 3,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        save_interval_steps=max(save_every, 1),
        enable_async_checkpointing=async_save,
        create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self):
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, step: int, state, config: Dict[str, Any],
           force: bool = False) -> bool:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              config=ocp.args.JsonSave(config))
    return self._manager.save(int(step), args=args, force=force)

  def read_config(self, step: int) -> Dict[str, Any]:
    out = self._manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return dict(out["config"])

  def restore(self, abstract_state, step: Optional[int] = None
              ) -> Tuple[Any, Dict[str, Any], int]:
    """Restores ``step`` (default: the newest that reads back completely).

    A corrupt newest checkpoint is skipped with a warning and the previous
    one is used; with an explicit ``step`` a failure is an error.
    """
    candidates = [step] if step is not None else self.steps()[::-1]
    if not candidates:
      raise UserError(f"no checkpoint in {self.directory}")
    errors = []
    for s in candidates:
      if s not in self._manager.all_steps():
        raise UserError(f"no checkpoint for step {s} in {self.directory}; "
                        f"available: {self.steps()}")
      try:
        out = self._manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            config=ocp.args.JsonRestore()))
        return out["state"], dict(out["config"]), s
      except Exception as e:  # pylint: disable=broad-except
        errors.append(f"step {s}: {type(e).__name__}: {e}".splitlines()[0])
        logging.warning("checkpoint at step %d is unreadable (%s); falling "
                        "back to the previous one", s, errors[-1])
        if step is not None:
          break
    raise UserError(f"no readable checkpoint in {self.directory} "
                    f"({'; '.join(errors)})")

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def abstract(tree):
  """Shape/dtype/sharding stand-ins for ``tree`` (restore targets)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)

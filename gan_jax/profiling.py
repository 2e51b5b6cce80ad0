"""``--profile.*``: a jax.profiler trace of some training steps.

The trace (TensorBoard's profile plugin, Perfetto) goes to WORKDIR/profile
(WORKDIR/profile/process_I on multi-host). Whole compiled calls are traced:
the count is rounded up to a multiple of ``--steps_per_loop`` (fewer if the
run ends first).
"""

from __future__ import annotations

import os
from typing import Optional

import jax
from absl import logging

from gan_jax import sections

sections.integer("profile", "steps", 0, "Record a jax.profiler trace of this "
                 "many training steps into WORKDIR/profile (WORKDIR/profile/"
                 "process_I on multi-host; TensorBoard's profile plugin, "
                 "Perfetto); 0 = off. Whole compiled calls are traced: the "
                 "count is rounded up to a multiple of --steps_per_loop "
                 "(fewer if the run ends first).", owner="run", safe=True,
                 bounds=">= 0")
sections.integer("profile", "start", -1, "Step from which the trace starts "
                 "(at the first --steps_per_loop boundary at or after it; "
                 "the first call's compilation is included if it falls "
                 "there); -1 = after this process's first compiled call.",
                 owner="run", safe=True, bounds=">= -1",
                 inert_unless=(lambda p: p["steps"] > 0,
                               "--profile.steps is 0 (no trace)"))


class Profile:
  """``--profile.steps``: a jax.profiler trace of whole compiled calls into
  WORKDIR/profile, from ``--profile.start`` (default: after this start's
  first call, so its compilation stays out)."""

  def __init__(self, cfg, workdir: str):
    knobs = sections.knobs(cfg, "profile")
    self.count, self.start = knobs["steps"], knobs["start"]
    self.directory = os.path.join(workdir, "profile")
    if jax.process_count() > 1:  # one trace per process
      self.directory = os.path.join(self.directory,
                                    f"process_{jax.process_index()}")
    self.first: Optional[int] = None  # this process's first step
    self.began: Optional[int] = None
    self.last = 0
    self.done = not self.count

  def before_call(self, step: int):
    if self.first is None:
      self.first = step
    if self.done or self.began is not None:
      return
    if self.start >= 0 and step >= self.start + self.count:
      self.done = True  # a resumed run already past the traced steps
    elif (step >= self.start) if self.start >= 0 else step > self.first:
      jax.profiler.start_trace(self.directory)
      self.began = self.last = step

  def after_call(self, step: int, state):
    if self.began is not None:
      self.last = step
      if step >= self.began + self.count:
        jax.block_until_ready(state)
        self.close()

  def close(self):
    """Stops an open trace (at the end of its steps, or when the loop ends
    first)."""
    if self.began is not None:
      jax.profiler.stop_trace()
      logging.info("wrote a profile of steps %d-%d to %s", self.began + 1,
                   self.last, self.directory)
    self.began, self.done = None, True

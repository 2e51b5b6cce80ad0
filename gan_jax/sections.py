"""Config sections: a component's own knobs, ``--<section>.<key>=value``.

A method (or any component) defines its knobs in its own module::

    from gan_jax import sections

    sections.float_("lecam", "weight", 0.3, "Weight of the LeCam term.",
                    bounds=">= 0")

which defines the absl flag ``--lecam.weight``: parsed, bounds-checked,
recorded in flags.txt and the checkpoint and compared on resume like every
other flag (a user module's sections are defined when ``--extra_modules``
imports it, before the rest is parsed). ``knobs(cfg, "lecam")`` gives the
section as ``{key: value}``: the keyword arguments of the component's
factory. A key the section does not have is a one-line error naming the
section and its keys; a method's section set while another method runs is
one too (``check_unused``).
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from gan_jax import flags as flags_lib
from gan_jax.errors import UserError

# section -> {key: default}
SECTIONS: Dict[str, Dict[str, Any]] = {}
# section -> what it configures ("method": read only when --method=section)
KINDS: Dict[str, str] = {}
# "section.key" -> (active(section's knobs) -> bool, why it does nothing
# otherwise): a key that only acts with some values of its section's other
# keys (``--ema.start`` while ``--ema.decay`` is 0). Set away from its
# default where it does nothing, it gets a warning (``inert``), not an
# error: a sweep over --ema.decay with the start fixed is an experiment.
RULES: Dict[str, Tuple[Callable[[Dict[str, Any]], bool], str]] = {}


def _define(kind: str, section: str, key: str, default, help_: str,
            owner: str = "method", inert_unless=None, **kw):
  """``inert_unless``: ``(active, why)``, the key's entry in ``RULES``."""
  if not re.fullmatch(r"[a-z][a-z0-9_]*", section) or not re.fullmatch(
      r"[a-z][a-z0-9_]*", key):
    raise ValueError(f"section and key must be lower-case identifiers: "
                     f"{section!r}, {key!r}")
  name = f"{section}.{key}"
  if kind == "enum":  # flags_lib.enum takes the values before the help
    flags_lib.enum(name, default, kw.pop("values"), f"[{section}] {help_}",
                   **kw)
  else:
    getattr(flags_lib, kind)(name, default, f"[{section}] {help_}", **kw)
  SECTIONS.setdefault(section, {})[key] = default
  KINDS[section] = owner
  if inert_unless is not None:
    RULES[name] = inert_unless


def integer(section, key, default, help_, **kw):
  _define("integer", section, key, default, help_, **kw)


def float_(section, key, default, help_, **kw):
  _define("float_", section, key, default, help_, **kw)


def boolean(section, key, default, help_, **kw):
  _define("boolean", section, key, default, help_, **kw)


def string(section, key, default, help_, **kw):
  _define("string", section, key, default, help_, **kw)


def strings(section, key, default, help_, **kw):
  """A comma-separated list (``--eval.metrics=fid,kid``)."""
  _define("strings", section, key, default, help_, **kw)


def enum(section, key, default, values, help_, **kw):
  _define("enum", section, key, default, help_, values=values, **kw)


def knobs(cfg, section: str) -> Dict[str, Any]:
  """The section's ``{key: value}`` in ``cfg`` (empty for a section that
  has no knobs)."""
  values = dict(cfg.items())
  return {key: values[f"{section}.{key}"]
          for key in SECTIONS.get(section, {}) if f"{section}.{key}" in values}


def of_owner(owner: str):
  """The sections of one kind of component ("method", "penalty", ...)."""
  return sorted(s for s, kind in KINDS.items() if kind == owner)


def changed(cfg, section: str):
  """The keys of ``section`` whose value in ``cfg`` is not the default."""
  values = dict(cfg.items())
  return [k for k, default in SECTIONS.get(section, {}).items()
          if f"{section}.{k}" in values
          and values[f"{section}.{k}"] != _comparable(default)]


def inert(cfg) -> Dict[str, str]:
  """``{"section.key": why}`` for each key set away from its default that
  does nothing with its section's other values (``RULES``)."""
  out = {}
  for name, (active, why) in RULES.items():
    section, _, key = name.partition(".")
    if key in changed(cfg, section) and not active(knobs(cfg, section)):
      out[name] = why
  return out


def check_unused(cfg, method: str) -> None:
  """A method's section changed from its defaults while another method
  runs: one line, since those knobs would do nothing."""
  for section in of_owner("method"):
    keys = changed(cfg, section)
    if section != method and keys:
      raise UserError(
          f"--{section}.{keys[0]} configures --method={section}, but "
          f"this run is --method={method}")


def _comparable(value):
  return tuple(value) if isinstance(value, list) else value


def unknown_key_line(flag: str) -> Optional[str]:
  """The one line for an unknown flag ``section.key`` of a known section
  (None for other unknown flags)."""
  section, dot, key = flag.lstrip("-").partition("=")[0].partition(".")
  if not dot:
    return None
  if section not in SECTIONS:
    known = ", ".join(sorted(SECTIONS)) or "none"
    return (f"--{section}.{key}: no component has a section {section!r} "
            f"(sections: {known}; a user module's own are defined by "
            f"--extra_modules)")
  return (f"--{section}.{key}: section {section!r} has no key {key!r}; "
          f"its keys: {', '.join(sorted(SECTIONS[section]))}")


# --- shared sections: the keys of the component chosen by a flag -------------


def takes(factory, positional: int = 0) -> Optional[List[str]]:
  """The keyword parameters of ``factory`` after its first ``positional``
  ones (None: any, it has ``**kwargs``)."""
  params = list(inspect.signature(factory).parameters.values())[positional:]
  if any(p.kind is p.VAR_KEYWORD for p in params):
    return None
  return [p.name for p in params
          if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def default_of(factory, key: str):
  """The default of ``factory``'s keyword parameter ``key``: what an unset
  key of a shared section means for it."""
  return inspect.signature(factory).parameters[key].default


def build(registry, cfg, flag: str, section: str, *args, exclude=()):
  """``registry(name, *args, **keys)``: the component named by ``--flag``
  called with the keys of ``section`` set in ``cfg`` (not None). A section
  shared by the components of a kind (``--loss.*`` for every loss) has
  keys unset by default, so each component's own defaults apply; a key set
  that the chosen one does not take is a one-line error listing those it
  takes. ``exclude``: keys of the section the caller applies itself."""
  name = getattr(cfg, flag)
  given = keys_for(registry.get(name), cfg, section, len(args),
                   f"--{flag}={name}", exclude)
  return registry(name, *args, **given)


def keys_for(factory, cfg, section: str, positional: int, chosen: str,
             exclude=()) -> Dict[str, Any]:
  """The keys of ``section`` set in ``cfg`` (not None, not in
  ``exclude``), for ``factory`` (after its first ``positional``
  parameters), the component ``chosen`` names; a key it does not take is a
  one-line error listing those it takes."""
  given = {k: v for k, v in knobs(cfg, section).items()
           if v is not None and k not in exclude}
  accepted = takes(factory, positional)
  if accepted is not None:
    for key, value in given.items():
      if key not in accepted:
        raise UserError(
            f"--{section}.{key}={value}: {chosen} does not take it; "
            f"its keys: {', '.join(sorted(accepted)) or 'none'}")
  return given

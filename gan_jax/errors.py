"""User-facing errors: one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import sys


class UserError(Exception):
  """Bad input from the user (flag values, files, shapes, checkpoints).

  Entry points catch it and print ``error: <message>`` as a single line, so the
  message must say what is wrong and how to fix it.
  """


def die(message: str, code: int = 2) -> "NoReturn":  # noqa: F821
  """Prints one line to stderr and exits."""
  message = " ".join(str(message).split())  # keep it to one line
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  raise SystemExit(code)

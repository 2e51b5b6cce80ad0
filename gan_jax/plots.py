"""Pictures of a run: toy scatter plots and image grids (matplotlib, PIL)."""

from __future__ import annotations

import io
import textwrap
from typing import Optional

import numpy as np

from gan_jax import writers


def scatter_png(path: str, samples: np.ndarray, real: np.ndarray,
                title: str = "", modes: Optional[np.ndarray] = None) -> np.ndarray:
  """Generated samples over the data density; returns the image as uint8."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
  lo = np.minimum(real.min(0), np.percentile(samples, 1, axis=0))
  hi = np.maximum(real.max(0), np.percentile(samples, 99, axis=0))
  pad = 0.1 * (hi - lo) + 1e-3
  extent = [lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1]]
  ax.hexbin(real[:, 0], real[:, 1], gridsize=80, cmap="Greys", mincnt=1,
            extent=extent)
  ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:red", alpha=0.5,
             label="generated")
  if modes is not None:
    ax.scatter(modes[:, 0], modes[:, 1], s=12, marker="x", c="tab:blue",
               label="modes")
  ax.set_xlim(extent[0], extent[1])
  ax.set_ylim(extent[2], extent[3])
  ax.set_aspect("equal")
  ax.set_title(_fit(title), fontsize=9)
  ax.legend(loc="upper right", fontsize=7)
  return _save_figure(fig, path)


def _fit(title: str) -> str:
  """A title on lines that fit a 4-inch figure at 9 pt (a long one was
  cut at both edges): a long one breaks after its first colon, then at
  spaces."""
  width = 46
  if len(title) > width and ": " in title:
    title = title.replace(": ", ":\n", 1)
  return "\n".join(textwrap.fill(line, width=width, break_long_words=False)
                   for line in title.split("\n"))


def _save_figure(fig, path: str) -> np.ndarray:
  """Writes a matplotlib figure to ``path`` as PNG; returns it as uint8 RGB."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  plt.close(fig)
  with writers.atomic_open(path, "wb") as f:
    f.write(buf.getvalue())
  buf.seek(0)
  return np.asarray(Image.open(buf).convert("RGB"))


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> uint8."""
  x = (np.asarray(images, np.float32) + 1.0) * 127.5
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, rows: Optional[int] = None,
         pad: int = 2) -> np.ndarray:
  """(N, H, W, C) in [-1, 1] -> one uint8 (H', W', 3) grid, row-major."""
  x = to_uint8(images)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  n, h, w, c = x.shape
  rows = rows or int(np.ceil(np.sqrt(n)))
  cols = int(np.ceil(n / rows))
  out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255,
                np.uint8)
  for i in range(n):
    r, q = divmod(i, cols)
    out[pad + r * (h + pad): pad + r * (h + pad) + h,
        pad + q * (w + pad): pad + q * (w + pad) + w] = x[i]
  return out


def save_png(path: str, image: np.ndarray):
  """Writes a uint8 image as PNG, atomically (a failed write keeps the
  file that was there)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with writers.atomic_open(path, "wb") as f:
    Image.fromarray(image).save(f, format="PNG")


def paths_png(path: str, linear: np.ndarray, spherical: np.ndarray,
              real: np.ndarray, title: str = "") -> np.ndarray:
  """2-D toy latent interpolations: each (n, steps, 2) path drawn over the
  data, linear solid and spherical dashed; returns the image as uint8."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
  ax.scatter(real[:, 0], real[:, 1], s=1, c="0.8")
  colors = plt.get_cmap("tab10")
  for i, (lin, sph) in enumerate(zip(linear, spherical)):
    c = colors(i % 10)
    ax.plot(lin[:, 0], lin[:, 1], "-o", ms=2, lw=1, c=c)
    ax.plot(sph[:, 0], sph[:, 1], "--o", ms=2, lw=1, c=c)
  ax.set_aspect("equal")
  ax.set_title(_fit(title or "linear (solid) / spherical (dashed)"),
               fontsize=9)
  return _save_figure(fig, path)

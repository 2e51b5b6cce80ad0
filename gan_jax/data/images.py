"""Image datasets: tfds data read offline, and the deterministic input stream.

Names resolve as follows (``--dataset``):

* ``mnist``, ``fashion_mnist``: the TF-free builder of ``mnist_family``,
  prepared from the official files in ``--tfds_manual_dir``.
* ``stacked_mnist``: see ``stacked_mnist.py``.
* any other tfds name (``cifar10``, ``celeb_a/...``), or ``tfds:NAME`` to
  force a stock builder (``tfds:mnist``): tfds' own builder. Reading needs only
  array_record files; preparing them needs TensorFlow (an optional extra).

The training stream is infinite: epoch ``e`` is the train split permuted by
``numpy.random.default_rng([seed, e])``, and training step ``s`` reads stream
positions ``[s * d_steps * B, (s + 1) * d_steps * B)``. A batch is a function
of its step alone, so a resumed run reads exactly what an uninterrupted one
would, and process ``p`` of ``P`` reads rows ``[p B/P, (p+1) B/P)`` of every
global batch and nothing else.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import queue
import socket
import threading
import urllib.parse
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from gan_jax.data import DATASETS
from gan_jax.errors import UserError

TFDS_PREFIX = "tfds:"
MNIST_FAMILY = ("mnist", "fashion_mnist")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def default_manual_dir(name: str) -> Optional[str]:
  """``<repo>/../shared/data/<name>`` when it exists (tests and CI)."""
  path = os.path.normpath(os.path.join(_REPO, "..", "shared", "data", name))
  return path if os.path.isdir(path) else None


def is_tfds_name(name: str) -> bool:
  """Whether ``name`` is an image dataset this module can load."""
  if name in MNIST_FAMILY + ("stacked_mnist",) or name.startswith(
      TFDS_PREFIX):
    return True
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    tfds.builder_cls(name.split("/")[0].split(":")[0])
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def load_arrays(name: str, split: str, *, data_dir: Optional[str] = None,
                manual_dir: Optional[str] = None,
                image_size: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """A whole split as (uint8 NHWC images, int32 labels), read-only arrays.

  Prepares the dataset offline first if needed. Labels are zeros for
  unlabelled datasets. ``image_size`` > 0 resizes to that height and width.
  """
  images, labels, _ = _load(name, split, data_dir, manual_dir, image_size)
  return images, labels


def num_classes_of(name: str, *, data_dir: Optional[str] = None,
                   manual_dir: Optional[str] = None) -> int:
  """Number of label classes of ``name`` (0 when unlabelled)."""
  if name in MNIST_FAMILY:
    return 10
  if name == "stacked_mnist":
    return 1000
  return _load(name, "train", data_dir, manual_dir, 0)[2]


@functools.lru_cache(maxsize=8)
def _load(name, split, data_dir, manual_dir, image_size):
  if name == "stacked_mnist":
    from gan_jax.data import stacked_mnist  # pylint: disable=g-import-not-at-top
    images, labels = stacked_mnist.load_arrays(
        split, data_dir=data_dir, manual_dir=manual_dir,
        image_size=image_size)
    num_classes = stacked_mnist.NUM_CLASSES
  elif name in MNIST_FAMILY:
    from gan_jax.data import mnist_family  # pylint: disable=g-import-not-at-top
    if split not in mnist_family.SPLITS:
      raise UserError(f"{name} has splits {', '.join(mnist_family.SPLITS)}, "
                      f"not {split!r}")
    images, labels = mnist_family.load_split(
        name, split, data_dir, manual_dir or default_manual_dir(name))
    num_classes = 10
  else:
    images, labels, num_classes = _load_stock(
        name[len(TFDS_PREFIX):] if name.startswith(TFDS_PREFIX) else name,
        split, data_dir, manual_dir, image_size, flag_name=name)
  if image_size and images.shape[1:3] != (image_size, image_size):
    images = resize(images, image_size)
  images = np.ascontiguousarray(images)
  labels = np.ascontiguousarray(labels, np.int32)
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels, num_classes


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes uint8 NHWC images to ``size`` x ``size``; uint8 out.

  Separable triangle filter with half-pixel centres: bilinear when enlarging,
  antialiased when shrinking (as ``jax.image.resize(..., "linear")``), done as
  two small matrix products per chunk of images.
  """
  rows = _resize_matrix(images.shape[1], size)
  cols = _resize_matrix(images.shape[2], size)
  out = np.empty((len(images), size, size, images.shape[3]), np.uint8)
  for i in range(0, len(images), 2048):
    chunk = np.moveaxis(images[i:i + 2048], 3, 1).astype(np.float32)
    x = np.moveaxis(rows @ chunk @ cols.T, 1, 3)  # NCHW products, back to NHWC
    out[i:i + 2048] = np.clip(np.rint(x), 0, 255)
  return out


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of a triangle kernel, rows normalized."""
  scale = n_out / n_in
  width = max(1.0, 1.0 / scale)  # widen the kernel when shrinking
  centres = (np.arange(n_out) + 0.5) / scale - 0.5
  w = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None, :] - centres[:, None])
                 / width)
  return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------- stock tfds builders


def _load_stock(name, split, data_dir, manual_dir, image_size,
                flag_name=None):
  """A split of a stock tfds image dataset, preparing it only if it can."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f"unknown tensorflow-datasets dataset {name!r}") from None
  except Exception as e:  # pylint: disable=broad-except
    # An unknown config or version (ValueError, AssertionError), a name
    # tfds cannot parse, a corrupt dataset_info.json (protobuf ParseError).
    raise UserError(f"cannot use tensorflow-datasets dataset {name!r}: "
                    f"{_first_line(e)}") from None
  # Before preparing: a text set would otherwise end in "needs TensorFlow".
  _check_image_feature(builder, flag_name or name, required=False)
  try:
    source = builder.as_data_source(split=split)
  except (NotImplementedError, AssertionError, FileNotFoundError, KeyError,
          ValueError) as e:
    # is_prepared() logs a warning for a folder without dataset_info.json,
    # which would be a second stderr line before the one-line error.
    info = os.path.join(os.fspath(builder.data_dir), "dataset_info.json")
    if os.path.isfile(info) and builder.is_prepared():
      raise UserError(
          f"{name} in {builder.data_dir} can't be read without TensorFlow "
          f"({_first_line(e)}); prepare it with file_format=array_record"
      ) from None
    _prepare_stock(builder, manual_dir)
    source = builder.as_data_source(split=split)
  features = _check_image_feature(builder, flag_name or name)
  label = features["label"] if "label" in features else None
  num_classes = getattr(label, "num_classes", 0) or 0
  shape = tuple(features["image"].shape)
  if None in shape[:2] and not image_size:
    raise UserError(f"{name} has images of varying size {shape}; pass "
                    f"--data.image_size")
  n = len(source)
  images, labels = None, np.zeros((n,), np.int32)
  for i in range(n):
    ex = source[i]
    image = np.asarray(ex["image"], np.uint8)
    if image.ndim == 2:
      image = image[..., None]
    if image_size and image.shape[:2] != (image_size, image_size):
      image = resize(image[None], image_size)[0]
    if images is None:
      images = np.empty((n,) + image.shape, np.uint8)
    images[i] = image
    if num_classes:
      labels[i] = int(ex["label"])
  if images is None:
    raise UserError(f"{name} split {split!r} is empty")
  return images, labels, num_classes


def _check_image_feature(builder, flag_name, required=True):
  """The builder's features, refused in one line without an ``image`` one.

  tfds describes most builders' features from their code alone (no
  download, no TensorFlow); where it cannot and ``required`` is False,
  returns None and the caller goes on (preparing says what it needs).
  """
  try:
    features = builder.info.features
    names = sorted(features.keys())
  except Exception:  # pylint: disable=broad-except
    if required:
      raise
    return None
  if "image" not in names:
    raise UserError(
        f"--dataset={flag_name}: the tfds dataset has no image feature "
        f"(features: {', '.join(names) or 'none'}); gan_jax trains on image "
        f"datasets")
  return features


def _prepare_stock(builder, manual_dir):
  """Prepares a stock builder, or fails in seconds with one line."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = builder.name
  where = builder.data_dir
  if importlib.util.find_spec("tensorflow") is None:
    raise UserError(
        f"{name} is not prepared in {where}; preparing stock tfds builders "
        f"needs TensorFlow (pip install 'gan_jax[tensorflow]'), or prepare it "
        f"elsewhere with file_format=array_record and pass --tfds_data_dir "
        f"(mnist and fashion_mnist need no TensorFlow)")
  try:
    url_infos = dict(builder.url_infos or {})
  except Exception:  # pylint: disable=broad-except
    url_infos = {}
  missing = {}
  for url, info in url_infos.items():
    fname = getattr(info, "filename", None) or os.path.basename(
        urllib.parse.urlparse(url).path)
    if not (manual_dir and os.path.isfile(os.path.join(manual_dir, fname))):
      missing[url] = fname
  for url, fname in missing.items():
    host = urllib.parse.urlparse(url).hostname
    port = urllib.parse.urlparse(url).port or 443
    if not _reachable(host, port):
      raise UserError(
          f"{name} is not prepared in {where} and {host} is unreachable: put "
          f"{', '.join(sorted(missing.values()))} in --tfds_manual_dir="
          f"{manual_dir or 'FOLDER'}")
  try:
    # tfds' progress bars stay off the console (and out of log files).
    from gan_jax.data import mnist_family  # pylint: disable=g-import-not-at-top
    with mnist_family.quiet_progress():
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              manual_dir=manual_dir, try_download_gcs=False))
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"preparing {name} in {where} failed: "
                    f"{_first_line(e)}") from e


def _reachable(host: Optional[str], port: int, timeout: float = 3.0) -> bool:
  if not host:
    return False
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


# ------------------------------------------------------- the input stream


class ImageDataset:
  """An in-memory uint8 image set and its deterministic training stream."""

  kind = "image"

  def __init__(self, images: np.ndarray, labels: Optional[np.ndarray],
               num_classes: int, seed: int, name: str = "",
               eval_loader=None):
    if images.ndim != 4 or images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 NHWC, got {images.dtype} "
                       f"{images.shape}")
    self.name = name
    self.images = images
    self.labels = (np.zeros((len(images),), np.int32) if labels is None
                   else np.asarray(labels, np.int32))
    self.num_classes = int(num_classes)
    self.seed = int(seed)
    self.shape = tuple(images.shape[1:])
    self._eval_loader = eval_loader
    self._valid: Optional[Tuple[np.ndarray, np.ndarray]] = None
    self._perms: Dict[Tuple[int, ...], np.ndarray] = {}
    self._lock = threading.Lock()

  @property
  def num_examples(self) -> int:
    """Examples per epoch."""
    return len(self.images)

  def with_seed(self, seed: int) -> "ImageDataset":
    """The same images with the data order of ``seed`` (a --num_seeds
    replica's stream), of the same class (a subclass's stream, e.g. Stacked
    MNIST's triples, stays what it is)."""
    out = self._copy()
    out.seed = int(seed)
    return out

  def held_out(self, n: int) -> "ImageDataset":
    """This set trained on its first ``n`` images only, the others held out
    as its ``valid`` split (``--data.train_examples``)."""
    total = len(self.images)
    if not 0 < n <= total:
      raise UserError(f"--data.train_examples={n}: the train split of "
                      f"{self.name or 'this dataset'} has {total} images")
    out = self._copy()
    out.images, out.labels = self.images[:n], self.labels[:n]
    out._valid = (self.images[n:], self.labels[n:])
    return out

  def _copy(self) -> "ImageDataset":
    """A shallow copy (same class, same arrays) with its own epoch-order
    cache and lock."""
    out = copy.copy(self)
    out._perms = {}
    out._lock = threading.Lock()
    return out

  def permutation(self, epoch: int, *stream: int) -> np.ndarray:
    """The order of epoch ``epoch``: a function of (seed, epoch, *stream)."""
    key = (int(epoch),) + tuple(int(s) for s in stream)
    with self._lock:
      perm = self._perms.get(key)
      if perm is None:
        rng = np.random.default_rng([self.seed % (1 << 64), *key])
        perm = rng.permutation(len(self.images))
        if len(self._perms) >= 8:  # a few epochs in flight at most
          self._perms.pop(next(iter(self._perms)))
        self._perms[key] = perm
    return perm

  def _indices(self, positions: np.ndarray, *stream: int) -> np.ndarray:
    """Example indices at stream positions (any shape)."""
    n = len(self.images)
    epochs, within = np.divmod(positions, n)
    out = np.empty(positions.shape, np.int64)
    for e in np.unique(epochs):
      mask = epochs == e
      out[mask] = self.permutation(int(e), *stream)[within[mask]]
    return out

  def examples(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 images and int32 labels at stream positions (any shape)."""
    idx = self._indices(positions)
    return self.images[idx], self.labels[idx]

  def batches(self, start_step: int, num_steps: int, d_steps: int,
              batch_size: int, process_index: int = 0,
              process_count: int = 1,
              rows: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """This process's data for steps [start_step, start_step + num_steps).

    The process feeds ``rows`` of each global batch (the positions its
    devices hold in the mesh, ``gan_jax.distributed.process_rows``), by
    default the ``process_index``-th of ``process_count`` equal blocks.
    Returns ``image`` float32 (num_steps, d_steps, R, H, W, C) in [-1, 1]
    and ``label`` int32 (num_steps, d_steps, R), R rows.
    """
    if rows is None:
      if batch_size % process_count:
        raise UserError(f"batch_size {batch_size} must divide by the "
                        f"number of processes {process_count}")
      if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in "
                         f"[0, {process_count})")
      local = batch_size // process_count
      rows = process_index * local + np.arange(local, dtype=np.int64)
    else:
      rows = np.asarray(rows, np.int64)
      if rows.ndim != 1 or not np.all((rows >= 0) & (rows < batch_size)):
        raise ValueError(f"rows must be indices of a batch of {batch_size}")
      local = len(rows)
    slots = (start_step * d_steps + np.arange(num_steps * d_steps,
                                              dtype=np.int64))
    positions = (slots[:, None] * batch_size + rows[None, :]).reshape(
        num_steps, d_steps, local)
    images, labels = self.examples(positions)
    x = images.astype(np.float32)
    x *= np.float32(1 / 127.5)
    x -= np.float32(1)
    return {"image": x, "label": labels.astype(np.int32)}

  def iterator(self, start_step: int, steps_per_call: int, d_steps: int,
               batch_size: int, process_index: int = 0,
               process_count: int = 1, prefetch: int = 2,
               rows: Optional[np.ndarray] = None) -> "Prefetcher":
    """Batches of consecutive step ranges, read ahead by a thread."""
    return Prefetcher(
        functools.partial(self.batches, num_steps=steps_per_call,
                          d_steps=d_steps, batch_size=batch_size,
                          process_index=process_index,
                          process_count=process_count, rows=rows),
        start_step, steps_per_call, prefetch)

  def eval_arrays(self, split: str = "test") -> Tuple[np.ndarray, np.ndarray]:
    """A split as uint8 images at this dataset's size and int32 labels;
    ``valid``: the training images held out by ``held_out``."""
    if split == "valid":
      if self._valid is None or not len(self._valid[0]):
        raise UserError(
            f"dataset {self.name!r} holds out no training images: "
            "--data.train_examples=N trains on the first N images of the train "
            "split and holds out the rest as its 'valid' split")
      return self._valid
    if self._eval_loader is None:
      raise UserError(f"dataset {self.name!r} has no {split!r} split")
    return self._eval_loader(split)


class Prefetcher(Iterator[Dict[str, np.ndarray]]):
  """Calls ``read(start)`` for start, start + k, ... in a daemon thread."""

  def __init__(self, read, start_step: int, steps_per_call: int,
               prefetch: int = 2):
    self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, prefetch))
    self._stop = threading.Event()
    self._thread = threading.Thread(
        target=self._run, args=(read, start_step, steps_per_call),
        daemon=True, name="gan_jax-prefetch")
    self._thread.start()

  def _run(self, read, step, steps_per_call):
    while not self._stop.is_set():
      try:
        item = (read(step), None)
      except BaseException as e:  # pylint: disable=broad-except
        item = (None, e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[1] is not None:
        return
      step += steps_per_call

  def __next__(self) -> Dict[str, np.ndarray]:
    batch, error = self._queue.get()
    if error is not None:
      self.close()
      raise error
    return batch

  def close(self):
    """Stops the reading thread."""
    self._stop.set()
    self._thread.join(timeout=5)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def make(context, image_size: Optional[int] = None) -> ImageDataset:
  """The training dataset ``context.name`` (a ``data.DataContext``),
  resized to ``image_size`` if given."""
  name = context.name
  load = functools.partial(
      _load, name, data_dir=context.data_dir,
      manual_dir=context.manual_dir, image_size=image_size or 0)
  images, labels, num_classes = load("train")
  return ImageDataset(images, labels, num_classes, context.seed, name,
                      eval_loader=lambda split: load(split)[:2])


for _name in MNIST_FAMILY:
  DATASETS.register(_name, make)

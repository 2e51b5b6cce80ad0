"""MNIST and Fashion-MNIST prepared by tfds from the official files, no TF.

tfds' stock ``mnist`` builder needs TensorFlow to unpack its gz files. This
builder (``mnist_idx/mnist``, ``mnist_idx/fashion_mnist``) reads the four
official ``*-idx?-ubyte.gz`` files from a manual directory with numpy, checks
their sizes and sha256 against the values tfds registers for them, and writes
array_record files that ``tfds.data_source`` reads back. It never downloads.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
from typing import Dict, Optional, Tuple

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from gan_jax.errors import UserError

NAMES = ("mnist", "fashion_mnist")

# Official files: name -> (size in bytes, sha256), as in tfds' url_checksums.
FILES: Dict[str, Dict[str, Tuple[int, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            9912422,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": (
            28881,
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": (
            1648877,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": (
            4542,
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": (
            26421880,
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": (
            29515,
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": (
            4422102,
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": (
            5148,
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
}

# split -> (images file, labels file, number of examples)
SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}

LABEL_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}

SHAPE = (28, 28, 1)
_IDX_MAGIC = {1: 0x801, 3: 0x803}  # unsigned bytes, 1-D labels / 3-D images


def read_idx(path: str, ndim: int) -> np.ndarray:
  """Reads a gzipped IDX file (uint8 data) after checking its header."""
  with gzip.open(path, "rb") as f:
    data = f.read()
  magic = int.from_bytes(data[:4], "big")
  if magic != _IDX_MAGIC[ndim]:
    raise UserError(f"{path}: not an IDX file of {ndim}-D uint8 data "
                    f"(magic {magic:#x}, expected {_IDX_MAGIC[ndim]:#x})")
  dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
  offset = 4 + 4 * ndim
  if len(data) - offset != int(np.prod(dims)):
    raise UserError(f"{path}: IDX header says {dims} but the file holds "
                    f"{len(data) - offset} bytes of data")
  return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def check_manual_dir(name: str, manual_dir: Optional[str]) -> str:
  """Checks the four official files (presence, size, sha256); one-line errors.

  Runs before tfds so that a missing file fails in milliseconds, with no
  download attempt.
  """
  files = FILES[name]
  if not manual_dir:
    raise UserError(
        f"{name} is not prepared and no manual dir is set: put the official "
        f"files {', '.join(files)} in a folder and pass "
        f"--tfds_manual_dir=FOLDER")
  missing = [f for f in files if not os.path.isfile(os.path.join(manual_dir,
                                                                  f))]
  if len(missing) == len(files):
    raise UserError(
        f"{name}: --tfds_manual_dir={manual_dir} holds none of the official "
        f"files {', '.join(files)}; put them there or point the flag at "
        f"their folder")
  if missing:
    raise UserError(
        f"{name}: missing {', '.join(missing)} in --tfds_manual_dir="
        f"{manual_dir} (it must hold all of {', '.join(files)})")
  for fname, (size, sha256) in files.items():
    path = os.path.join(manual_dir, fname)
    actual_size = os.path.getsize(path)
    if actual_size != size:
      raise UserError(f"{path}: {actual_size} bytes, expected {size} (not the "
                      f"official {name} file)")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 22), b""):
        digest.update(chunk)
    if digest.hexdigest() != sha256:
      raise UserError(f"{path}: sha256 {digest.hexdigest()} is not the "
                      f"official {name} file's {sha256}")
  return manual_dir


class MnistIdx(tfds.core.GeneratorBasedBuilder):
  """MNIST-family builder that needs no TensorFlow (images stored raw)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Official IDX files, uint8 images stored raw."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in NAMES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the official train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
      " t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in the manual "
      "dir.")

  # tfds prints "Downloading and preparing dataset ..." before preparing;
  # nothing is downloaded here, so say what happens instead.
  def _log_download_bytes(self) -> None:
    logging.info("preparing %s from the official files of the manual dir "
                 "(no download) into %s, once", self.builder_config.name,
                 self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("%s prepared; later runs read it from %s",
                 self.builder_config.name, self.data_dir)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds locates code through importlib.resources, which fails for some
    # package layouts; this module's path is the answer it looks for.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{self.builder_config.name} from the official IDX files.",
        features=tfds.features.FeaturesDict({
            # Raw bytes, not PNG: decoding needs neither TF nor an image codec.
            "image": tfds.features.Tensor(
                shape=SHAPE, dtype=np.uint8,
                encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(
                names=LABEL_NAMES[self.builder_config.name]),
        }),
        supervised_keys=("image", "label"),
        # Keep the official order: the training stream shuffles by
        # (seed, epoch) itself.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    folder = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(
        os.path.join(folder, images), os.path.join(folder, labels), count)
            for split, (images, labels, count) in SPLITS.items()}

  def _generate_examples(self, images_path, labels_path, count):
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape != (count,) + SHAPE[:2] or labels.shape != (count,):
      raise UserError(f"{images_path}, {labels_path}: shapes {images.shape}, "
                      f"{labels.shape}; expected {count} images of 28x28")
    for i in range(count):
      yield i, {"image": images[i][..., None], "label": int(labels[i])}


def builder(name: str, data_dir: Optional[str]) -> MnistIdx:
  return MnistIdx(config=name, data_dir=data_dir, file_format="array_record")


@contextlib.contextmanager
def quiet_progress():
  """tfds' progress bars off for the block (console and log files get
  gan_jax's own lines only), as they were after it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top
  was = getattr(tqdm_utils, "_active", True)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(was)


class DamagedError(UserError):
  """A prepared copy that can't be read back (a truncated, bit-flipped or
  missing file, say after a disk error or an interrupted copy): ``path``,
  the reader's one-line ``reason`` and the version ``folder`` holding it."""

  def __init__(self, name: str, path: str, reason: str, folder: str):
    super().__init__(
        f"{path}: the prepared {name} file is damaged ({reason}); delete "
        f"{folder} and prepare it again from the official files "
        f"(--tfds_manual_dir)")
    self.path, self.reason, self.folder = path, reason, folder


def prepare(name: str, data_dir: Optional[str],
            manual_dir: Optional[str]) -> MnistIdx:
  """The builder of ``name``, prepared from ``manual_dir`` if needed."""
  # pylint: disable=g-import-not-at-top
  from google.protobuf import json_format
  try:
    b = builder(name, data_dir)
  except (json_format.ParseError, UnicodeDecodeError) as e:
    # tfds reads an existing dataset_info.json when it builds the builder.
    from tensorflow_datasets.core.utils import file_utils
    _, folder = file_utils.get_data_dir_and_dataset_dir(
        given_data_dir=data_dir, builder_name=MnistIdx.name,
        config_name=name, version=MnistIdx.VERSION)
    folder = os.fspath(folder)
    raise DamagedError(name, os.path.join(folder, "dataset_info.json"),
                       _first_line(e), folder) from None
  # is_prepared() logs a warning for a folder without dataset_info.json,
  # which would be a second stderr line before the one-line error.
  info = os.path.join(os.fspath(b.data_dir), "dataset_info.json")
  if not (os.path.isfile(info) and b.is_prepared()):
    check_manual_dir(name, manual_dir)
    # tfds' progress bars stay off the console (and out of log files).
    with quiet_progress():
      b.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              manual_dir=manual_dir, try_download_gcs=False))
  return b


def read_split(b: MnistIdx, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """All of a split as (uint8 NHWC images, int32 labels), via data_source.

  Parses the stored tf.Example protos directly: ~10x faster than tfds' per
  example Python decoding (1 s instead of 5 s for the 60000 train images).
  A damaged file raises DamagedError: the array_record reader checks its
  hashes as it reads, so catching its error here costs a normal read
  nothing.
  """
  # pylint: disable=g-import-not-at-top
  from google.protobuf import message
  from tensorflow_datasets.proto import tf_example_pb2
  name, folder = b.builder_config.name, os.fspath(b.data_dir)
  count = SPLITS[split][2]
  try:
    stored = b.info.splits[split].num_examples
    if stored != count:  # dataset_info.json's shard lengths: checked once
      raise DamagedError(name, os.path.join(folder, "dataset_info.json"),
                         f"{stored} {split} examples, expected {count}",
                         folder)
    source = b.as_data_source(split=split)
    raw = source.data_source.__getitems__(list(range(count)))
    examples = [tf_example_pb2.Example.FromString(r).features.feature
                for r in raw]
    images = np.frombuffer(
        b"".join(e["image"].bytes_list.value[0] for e in examples),
        np.uint8).reshape((count,) + SHAPE)
    labels = np.fromiter((e["label"].int64_list.value[0] for e in examples),
                         np.int32, count)
  except (RuntimeError, OSError, ValueError, KeyError, IndexError,
          message.DecodeError) as e:
    # RuntimeError: the reader's "Invalid Riegeli/records file" (truncated),
    # "Corrupted Riegeli/records file" (hash mismatch), "ArrayRecord file
    # should be at least 64KB big", "open() failed" (missing).
    raise DamagedError(name, _damaged_file(b, split, e), _first_line(e),
                       folder) from None
  return images, labels


def load_split(name: str, split: str, data_dir: Optional[str],
               manual_dir: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
  """A split of ``name`` (see read_split), prepared from ``manual_dir`` if
  needed.

  A damaged prepared copy is deleted and prepared again, with a warning,
  when ``manual_dir`` holds the official files; otherwise it is one
  UserError naming the file and the remedy.
  """
  try:
    return read_split(prepare(name, data_dir, manual_dir), split)
  except DamagedError as e:
    damaged = e
  try:
    check_manual_dir(name, manual_dir)
  except UserError as why:
    remedy = (f"it can't be prepared again: {why}" if manual_dir else
              f"pass --tfds_manual_dir=FOLDER holding the official files to "
              f"prepare it again (it replaces {damaged.folder})")
    raise UserError(f"{damaged.path}: the prepared {name} file is damaged "
                    f"({damaged.reason}); {remedy}") from None
  logging.warning("%s: the prepared %s file is damaged (%s); deleting %s "
                  "and preparing it again from %s", damaged.path, name,
                  damaged.reason, damaged.folder, manual_dir)
  shutil.rmtree(damaged.folder)
  return read_split(prepare(name, data_dir, manual_dir), split)


def _damaged_file(b: MnistIdx, split: str, e: BaseException) -> str:
  """The file of ``split`` that ``e`` is about: the one its message names,
  else the only one, else their folder."""
  try:
    files = [os.fspath(f) for f in b.info.splits[split].filepaths]
  except Exception:  # pylint: disable=broad-except
    files = []
  named = [f for f in files if f in str(e)]
  if named or len(files) == 1:
    return (named or files)[0]
  return os.fspath(b.data_dir)


def _first_line(e: BaseException) -> str:
  """The first line of ``e``'s message, at most 300 characters."""
  text = str(e).strip()
  line = text.splitlines()[0] if text else type(e).__name__
  return line if len(line) <= 300 else line[:297] + "..."

"""gan_jax.writers: metrics.jsonl and TensorBoard records."""

import contextlib
import errno
import glob
import json
import os
import resource
import signal
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from gan_jax import writers


def tensorboard_scalars(directory):
  """(tag, step, value) of every scalar in the event files (TFRecord
  framing: length, its CRC, the Event proto, its CRC)."""
  out = []
  for path in sorted(glob.glob(os.path.join(directory, "events.*"))):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      out += [(v.tag, event.step, v.simple_value)
              for v in event.summary.value]
  return out


def test_non_finite_values_go_to_jsonl_only(tmp_path):
  w = writers.MetricWriter(str(tmp_path))
  w.write_scalars(2, {"modes": 0.0, "reverse_kl": float("inf"),
                      "d_loss": float("nan")})
  w.write_scalars(4, {"modes": 3.0, "reverse_kl": 0.5, "d_loss": 1.25})
  w.close()
  records = writers.read_metrics(str(tmp_path))
  assert records == [
      {"step": 2, "d_loss": "nan", "modes": 0.0, "reverse_kl": "inf"},
      {"step": 4, "d_loss": 1.25, "modes": 3.0, "reverse_kl": 0.5}]
  assert json.loads(open(tmp_path / "metrics.jsonl").readline())["step"] == 2
  assert sorted(tensorboard_scalars(tmp_path / "tensorboard")) == [
      ("d_loss", 4, 1.25), ("modes", 2, 0.0), ("modes", 4, 3.0),
      ("reverse_kl", 4, 0.5)]


def test_atomic_open_replaces_whole_or_not_at_all(tmp_path):
  import pytest
  path = str(tmp_path / "flags.txt")
  with writers.atomic_open(path) as f:
    f.write("--a=1\n")
  assert open(path).read() == "--a=1\n"
  with pytest.raises(RuntimeError):
    with writers.atomic_open(path) as f:
      f.write("--a=2\n--b=")
      raise RuntimeError("crashed mid-write")
  assert open(path).read() == "--a=1\n"  # the old file, not half a new one
  assert os.listdir(tmp_path) == ["flags.txt"]  # and no temporary left


def test_profile_steps_writes_one_trace_of_whole_calls(tmp_path, caplog):
  import logging
  from gan_jax import train
  from helpers import tiny_config
  caplog.set_level(logging.INFO)
  cfg = tiny_config(num_steps=8, steps_per_loop=2, log_every=2,
                    **{"profile.steps": 3}, workdir=str(tmp_path))
  train.train_and_evaluate(cfg, str(tmp_path))
  traces = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*"
                         / "*.xplane.pb"))
  assert len(traces) == 1, traces
  # After the first call (compilation), 3 steps rounded up to 2 calls.
  said = [r.getMessage() for r in caplog.records
          if r.getMessage().startswith("wrote a profile")]
  assert said == [f"wrote a profile of steps 3-6 to {tmp_path}/profile"]


def test_console_line_shows_losses_and_quality_metrics():
  """The progress line shows the evaluation metrics (Stacked MNIST's KL,
  FID, ...) after the losses, and a user metric's outputs when the loop
  passes them as ``extra``; diagnostics stay in metrics.jsonl only."""
  scalars = {"d_loss": 1.25, "g_loss": 0.5, "d_grad_norm": 3.0,
             "modes": 912.0, "kl": 0.3456, "fid": 12.5, "my_score": 7.0}
  line = writers.format_line(200, 1000, 10.0, scalars)
  assert line == ("step 200/1000 | 10.0 steps/s | ETA 1:20 | d_loss 1.25 | "
                  "g_loss 0.5 | modes 912 | kl 0.3456 | fid 12.5")
  line = writers.format_line(200, 1000, None, scalars, extra=["my_score"])
  assert line.endswith("| fid 12.5 | my_score 7")


def test_final_summary_includes_evaluation_metrics(capsys):
  from gan_jax import main  # pylint: disable=g-import-not-at-top
  main.print_summary({"step": 30, "d_loss": 1.0, "g_loss": 2.0,
                      "kl": 0.25, "modes": 990.0, "d_grad_norm": 1.0,
                      "steps_per_sec": 12.5})
  assert capsys.readouterr().out == (
      "final (step 30): modes=990, kl=0.25, d_loss=1, g_loss=2, "
      "steps_per_sec=12.5\n")


def test_records_survive_crash_debris(tmp_path):
  """A crash can leave a line cut short (no newline), and stray bytes or
  hand edits can leave lines that are not UTF-8 or not records: readers
  skip them, the next record is not glued to a cut line, and resuming
  (truncate_after) keeps exactly the whole records up to its step."""
  w = writers.MetricWriter(str(tmp_path))
  w.write_scalars(1, {"d_loss": 1.0})
  with open(w.path, "ab") as f:
    f.write(b"\xff\xfe garbage\n123\n[]\n{\"step\": null}\n{\"step\": 2, \"d_lo")
  w.write_scalars(3, {"d_loss": 3.0})
  assert [r["step"] for r in writers.read_metrics(str(tmp_path))] == [1, 3]
  w.truncate_after(2)
  assert [r["step"] for r in writers.read_metrics(str(tmp_path))] == [1]
  with open(w.path) as f:
    assert f.read() == '{"step": 1, "d_loss": 1.0}\n'
  w.close()


def test_a_tensorboard_write_failing_in_its_thread_is_one_error(tmp_path,
                                                               monkeypatch):
  """tensorboardX writes events in a thread that ends on an OSError (disk
  full); the next TensorBoard call reports it as one UserError instead of
  queueing events for the dead thread, which used to block forever."""
  import errno  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from tensorboardX import event_file_writer  # pylint: disable=import-outside-toplevel
  from gan_jax.errors import UserError  # pylint: disable=import-outside-toplevel

  w = writers.MetricWriter(str(tmp_path))
  w.write_scalars(1, {"a": 1.0})
  w.flush()  # step 1's event is written before the disk "fills"

  def full(self, event):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(event_file_writer.EventsWriter, "write_event", full)
  start = time.time()
  try:
    with pytest.raises(UserError, match=r"writing TensorBoard events failed "
                       r"\(.*No space left on device\); .*metrics.jsonl and "
                       "the checkpoints saved so far are kept"):
      for step in range(2, 5000):  # more events than tensorboardX's queue
        w.write_scalars(step, {"a": float(step)})
  finally:
    writers._tensorboard_failures.clear()  # pylint: disable=protected-access
    monkeypatch.undo()
    w.close()  # (its exit hook would otherwise do it at the end of pytest)
  assert time.time() - start < 60
  # metrics.jsonl has every record, the last one's TensorBoard write failed.
  steps = [r["step"] for r in writers.read_metrics(str(tmp_path))]
  assert steps == list(range(1, len(steps) + 1)) and len(steps) < 4999


def test_a_long_plot_title_breaks_after_its_colon_to_fit_the_figure():
  """Scatter titles ("DATASET step N: modes, HQ, KL") were cut at both
  edges of the 4-inch figure."""
  from gan_jax import plots  # pylint: disable=g-import-not-at-top
  title = "25gaussians step 20000: 25/25 modes, 74.6% HQ, KL 0.0267"
  lines = plots._fit(title).split("\n")  # pylint: disable=protected-access
  assert lines == ["25gaussians step 20000:",
                   "25/25 modes, 74.6% HQ, KL 0.0267"]
  assert plots._fit("swissroll step 20000") == "swissroll step 20000"  # pylint: disable=protected-access


@contextlib.contextmanager
def _file_size_limit(nbytes):
  """No file this process writes may grow past ``nbytes`` (RLIMIT_FSIZE,
  SIGXFSZ ignored): a write beyond fails with EFBIG, as on a full disk."""
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


def _write_npz(path, big):
  from gan_jax import sample  # pylint: disable=g-import-not-at-top
  n = 20000 if big else 4
  sample.write(path, {"samples": np.full((n, 2), 0.5, np.float32)}, None, "")


def _write_grid_png(path, big):
  from gan_jax import plots  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  plots.save_png(path, plots.grid(rng.uniform(-1, 1, (400 if big else 4,
                                                      8, 8, 3))))


def _write_scatter_png(path, big):
  from gan_jax import plots  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  plots.scatter_png(path, rng.normal(size=(5000 if big else 10, 2)),
                    rng.normal(size=(2000, 2)), "ring step 4")


def _write_sweep_plot(path, big):
  from gan_jax import sweep  # pylint: disable=g-import-not-at-top
  values = [f"{v:.4g}" for v in np.geomspace(1e-5, 1e-2, 40 if big else 2)]
  s = sweep.Sweep(base="b.flags", directory=os.path.dirname(path),
                  axes=[("g_lr", values)], runs=[])
  rows = [(f"g_lr={v}", {"g_lr": v}, "finished", "", {"d_loss": i * 0.1})
          for i, v in enumerate(values)]
  assert sweep.plot(s, rows, "d_loss", None) == path


@pytest.mark.parametrize("name, write", [
    ("a.npz", _write_npz),  # gan_jax.sample --out=FILE.npz
    ("a.png", _write_grid_png),  # sample grids, samples/step_N.png
    ("a.png", _write_scatter_png),  # toy pictures
    ("d_loss_vs_g_lr.png", _write_sweep_plot),  # a sweep's plot
])
def test_a_failed_binary_write_keeps_the_old_file(tmp_path, name, write):
  """Issue 23: a write over a good file that fails midway (a full disk,
  ``ulimit -f``) truncated it; now the old file stays byte for byte, no
  temporary file is left, and the error names the file."""
  path = str(tmp_path / name)
  write(path, big=False)
  good = open(path, "rb").read()
  with pytest.raises(OSError) as e, _file_size_limit(16 * 1024):
    write(path, big=True)
  assert e.value.errno == errno.EFBIG
  assert e.value.filename == path  # the one-line error says which file
  assert open(path, "rb").read() == good
  assert os.listdir(tmp_path) == [name]
  write(path, big=True)  # with room, the new file replaces the old one
  assert open(path, "rb").read() != good
  assert os.listdir(tmp_path) == [name]


def test_atomic_open_binary_mode(tmp_path):
  path = str(tmp_path / "a.bin")
  with writers.atomic_open(path, "wb") as f:
    f.write(b"\x00old")
  with pytest.raises(OSError):
    with writers.atomic_open(path, "wb") as f:
      f.write(b"\x00new, cut")
      raise OSError(errno.ENOSPC, "No space left on device")
  assert open(path, "rb").read() == b"\x00old"
  assert os.listdir(tmp_path) == ["a.bin"]
  with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
    with writers.atomic_open(path, "ab"):
      pass

"""metrics.jsonl always, TensorBoard events when tensorboardX is installed."""

import errno
import json
import os
import struct
import threading

import pytest

from pgmoe_jax.training import summaries

tensorboardX = pytest.importorskip("tensorboardX")
event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def read_events(directory):
  """Scalars ``{tag: [(step, value)]}`` from the TFRecord event files."""
  scalars = {}
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), "rb") as f:
      blob = f.read()
    pos = 0
    while pos < len(blob):
      (length,) = struct.unpack("<Q", blob[pos:pos + 8])
      event = event_pb2.Event.FromString(blob[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append(
            (event.step, value.simple_value))
  return scalars


def test_jsonl_and_tensorboard_agree(tmp_path):
  log = summaries.MetricsLog(str(tmp_path), 0)
  for step in (10, 20, 30):
    log.write(step, "train", {"loss": 1.0 / step, "lr": 0.1})
  log.write(30, "val", {"energy_error_mha_median": 4.5})
  log.close()
  records = [json.loads(line) for line in
             open(tmp_path / summaries.METRICS_FILE)]
  assert [(r["split"], r["step"]) for r in records] == [
      ("train", 10), ("train", 20), ("train", 30), ("val", 30)]
  train = read_events(tmp_path / "tensorboard" / "train")
  assert [s for s, _ in train["loss"]] == [10, 20, 30]
  assert train["loss"][1][1] == pytest.approx(1 / 20)
  val = read_events(tmp_path / "tensorboard" / "val")
  assert val["energy_error_mha_median"] == [(30, pytest.approx(4.5))]


def test_resume_cuts_the_jsonl_back_and_tensorboard_can_be_off(tmp_path):
  log = summaries.MetricsLog(str(tmp_path), 0, tensorboard=False)
  for step in (10, 20, 30):
    log.write(step, "train", {"loss": float(step)})
  with open(tmp_path / summaries.METRICS_FILE, "a") as f:
    f.write('{"step": 40, "spl')  # a killed run's partial line
  log.close()
  assert not (tmp_path / "tensorboard").exists()
  summaries.MetricsLog(str(tmp_path), 20, tensorboard=False).close()
  steps = [json.loads(line)["step"] for line in
           open(tmp_path / summaries.METRICS_FILE)]
  assert steps == [10, 20]


def test_a_full_disk_when_closing_is_one_error(tmp_path, monkeypatch):
  checks = pytest.importorskip("pgmoe_jax.checks")
  record_writer = pytest.importorskip("tensorboardX.record_writer")
  log = summaries.MetricsLog(str(tmp_path), 0, tensorboard=True,
                             advice=lambda: "Step 10 is intact.")
  log.write(5, "train", {"loss": 1.0})
  # What tensorboardX runs at exit: each event file's close.
  writers = log._writers.values()  # pylint: disable=protected-access
  at_exit = [file_writer.event_writer.close for writer in writers
             for file_writer in writer.all_writers.values()]
  flush = record_writer.RecordWriter.flush

  def full(self):
    if threading.current_thread() is threading.main_thread():
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    flush(self)

  monkeypatch.setattr(record_writer.RecordWriter, "flush", full)
  with pytest.raises(checks.OutputError, match=r"TensorBoard events to "
                     r".*tensorboard failed.*disk is full.*Step 10 is intact"):
    log.close()
  for close in at_exit:
    close()  # stopped already: nothing left to flush or fail

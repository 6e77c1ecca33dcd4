"""Workdirs through etils.epath: local paths and a stand-in for gs://.

``etils.epath.testing.mock_epath`` routes every path, ``gs://`` included,
through a local backend; here it maps ``gs://bucket/...`` to a temporary
folder, so the code paths for object stores (no append, no lock, no
absolute path) run for real on this machine.
"""

import json
import os

from etils import epath
from etils.epath import testing as epath_testing
import pytest

from experiments.configs import test as test_config
from pgmoe_jax import data
from pgmoe_jax import paths
from pgmoe_jax.rundir import workdir as workdir_lib
from pgmoe_jax.training import summaries

BUCKET = "gs://bucket"


@pytest.fixture()
def fake_gcs(tmp_path):
  """gs://bucket/<x> -> <tmp_path>/<x> for every epath operation."""
  def local(p):
    text = os.fspath(p)
    if text.startswith(BUCKET):
      return str(tmp_path) + text[len(BUCKET):]
    return text

  def one(fn, p, *args, **kwargs):
    return fn(local(p), *args, **kwargs)

  def two(fn, p, dst, *args, **kwargs):
    return fn(local(p), local(dst), *args, **kwargs)

  with epath_testing.mock_epath(
      open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one,
      remove=one, rmtree=one, stat=one, glob=one, walk=one, rename=two,
      replace=two, copy=two):
    yield tmp_path


def test_paths_tell_local_from_remote(tmp_path):
  assert paths.is_remote("gs://b/run") and not paths.is_remote(str(tmp_path))
  assert os.fspath(paths.resolve("gs://b/run")) == "gs://b/run"
  assert os.fspath(paths.resolve("rel")) == os.path.abspath("rel")
  assert isinstance(paths.resolve(tmp_path), epath.Path)


def test_config_json_on_a_bucket(fake_gcs):
  run = f"{BUCKET}/run"
  config = test_config.get_config()
  assert workdir_lib.save_config(config, run) == []
  assert json.loads((fake_gcs / "run" / "config.json").read_text())[
      "model"]["tiles"] == 4
  assert workdir_lib.load_config(run).model.tiles == 4
  config.train.num_steps = 50  # a continued run: named and rewritten
  assert workdir_lib.save_config(config, run) == [
      "train.num_steps: 20 -> 50"]
  assert workdir_lib.checkpoint_dir(run) == f"{BUCKET}/run/checkpoints"


def test_metrics_on_a_bucket_are_rewritten_not_appended(fake_gcs):
  run = f"{BUCKET}/run"
  log = summaries.MetricsLog(run, 0, tensorboard=False)
  for step in (10, 20, 30):
    log.write(step, "train", {"loss": float(step)})
  log.close()
  lines = (fake_gcs / "run" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(x)["step"] for x in lines] == [10, 20, 30]
  summaries.MetricsLog(run, 20, tensorboard=False).close()  # a resume
  lines = (fake_gcs / "run" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(x)["step"] for x in lines] == [10, 20]


def test_evaluation_report_on_a_bucket(fake_gcs):
  from pgmoe_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  fig = report.new_figure(figsize=(2, 2))
  fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
  report.save_figure(fig, f"{BUCKET}/run/eval/curve.png")
  assert (fake_gcs / "run" / "eval" / "curve.png").stat().st_size > 1000
  md, js = report.write_report(f"{BUCKET}/run/eval", {}, model_name="m",
                               title="# T", note="n", record={"a": 1})
  assert md == f"{BUCKET}/run/eval/results.md"
  assert json.loads((fake_gcs / "run" / "eval" / "results.json")
                    .read_text()) == {"a": 1, "summaries": {}}


def test_datasets_stay_on_a_local_filesystem():
  with pytest.raises(ValueError, match="memory-mapped.*local or mounted"):
    data.open_dataset(f"{BUCKET}/data/train")

"""One run across several real processes (jax.distributed on this CPU).

Two OS processes, each with 2 forced CPU devices (4 global devices, a
loopback coordinator, JAX's CPU collectives), train the test config and end
with the parameters of one process on 4 devices and of one process on 1
device: the global batch, the streamed potentials and every reduction are
the same whatever the process and device count. Each launch runs in its own
process group with a timeout, so a failing run leaves no process behind.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from helpers import wells_splits

from pgmoe_jax import Grid
from pgmoe_jax import inference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 240
GRID = Grid((16, 16), 20.0)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def train(workdir, *overrides, processes=1, devices=1):
  """Runs experiments.train as ``processes`` processes of ``devices`` each.

  Returns the processes' (returncode, stderr) pairs; every process group is
  killed if the run fails or times out.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  base = [sys.executable, "-m", "experiments.train",
          "--config=experiments/configs/test.py", f"--workdir={workdir}",
          f"--jax_num_cpu_devices={devices}", *overrides]
  if processes > 1:
    port = free_port()
    commands = [base + [f"--coordinator_address=127.0.0.1:{port}",
                        f"--num_processes={processes}", f"--process_id={i}"]
                for i in range(processes)]
  else:
    commands = [base]
  procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True) for c in commands]
  results = []
  try:
    for p in procs:
      _, err = p.communicate(timeout=TIMEOUT_S)
      results.append((p.returncode, err))
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  for code, err in results:
    assert code == 0, err[-3000:]
  return results


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
  jax.config.update("jax_enable_x64", True)
  root = tmp_path_factory.mktemp("multihost_data")
  wells_splits(root, GRID, (("train", 48), ("val", 16)))
  return str(root)


COMMON = ("--jax_enable_x64", "--config.dtype=float64",
          "--config.train.num_steps=30", "--config.optim.warmup_steps=3",
          "--config.train.log_every_steps=5",
          "--config.train.checkpoint_every_steps=10")


def supervised(root):
  return ("--config.loss.mode=supervised", f"--config.data.train={root}/train",
          f"--config.data.val={root}/val", "--config.train.batch_size=8",
          "--config.train.eval_batch_size=8", "--config.loss.augment=True")


def final_params(workdir):
  model = inference.load_model(str(workdir), which="latest")
  assert model.step == model.config.train.num_steps
  return jax.tree.leaves(model.params)


def assert_same(a, b, rtol):
  for x, y in zip(final_params(a), final_params(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-3)


def val_records(workdir):
  import json  # pylint: disable=g-import-not-at-top
  return [r for r in map(json.loads, open(os.path.join(workdir,
                                                       "metrics.jsonl")))
          if r["split"] == "val"]


# Fast tier: test_the_compiled_loss_streams_per_device_rows.
@pytest.mark.slow
def test_two_processes_equal_one_supervised(labelled, tmp_path):
  args = COMMON + supervised(labelled)
  train(tmp_path / "p2x2", *args, processes=2, devices=2)
  train(tmp_path / "p1x4", *args, devices=4)
  train(tmp_path / "p1x1", *args)
  assert_same(tmp_path / "p2x2", tmp_path / "p1x4", 1e-9)
  assert_same(tmp_path / "p2x2", tmp_path / "p1x1", 1e-9)
  # Validation metrics too, gathered across the processes.
  a, b = val_records(tmp_path / "p2x2"), val_records(tmp_path / "p1x1")
  assert [r["step"] for r in a] == [r["step"] for r in b] == [10, 20, 30]
  for ra, rb in zip(a, b):
    assert ra["energy_error_mha_median"] == pytest.approx(
        rb["energy_error_mha_median"], rel=1e-9)
  # Only process 0 wrote: one record per step.
  assert len(a) == 3


@pytest.mark.slow  # ~35 s; the per-device stream test below covers the same
# split of work (fast tier)
def test_two_processes_equal_one_label_free(tmp_path):
  train(tmp_path / "p2x2", *COMMON, processes=2, devices=2)
  train(tmp_path / "p1x4", *COMMON, devices=4)
  train(tmp_path / "p1x1", *COMMON)
  assert_same(tmp_path / "p2x2", tmp_path / "p1x4", 1e-9)
  assert_same(tmp_path / "p2x2", tmp_path / "p1x1", 1e-9)


def test_incomplete_distributed_flags_are_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config=experiments/configs/test.py", f"--workdir={tmp_path}",
       "--coordinator_address=127.0.0.1:1234", "--num_processes=2"],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      "train: error: a multi-process run needs --coordinator_address, "
      "--num_processes and --process_id together; missing --process_id.")


class FakeSharding:
  """Stands in for a batch sharding whose devices span two processes."""

  def __init__(self, spans):
    self.is_fully_addressable = False
    self._spans = spans

  def addressable_devices_indices_map(self, shape):
    del shape
    return {i: (slice(a, b),) for i, (a, b) in enumerate(self._spans)}


def test_each_process_reads_only_its_rows():
  from pgmoe_jax import sharding  # pylint: disable=g-import-not-at-top
  assert sharding.local_rows(None, 8) == slice(0, 8)
  # Process 1 of 2 with two devices each holds rows 4..7 of 8.
  assert sharding.local_rows(FakeSharding([(4, 6), (6, 8)]), 8) == slice(4, 8)
  with pytest.raises(ValueError, match="not one block"):
    sharding.local_rows(FakeSharding([(0, 2), (4, 6)]), 8)


# --------------------------------------------------------------------------
# Preemption: SIGTERM saves at the next step and exits 75; SIGKILL loses
# only the steps since the last checkpoint. Either way the rerun ends with
# the parameters of an uninterrupted run.

LONG = ("--jax_enable_x64", "--config.dtype=float64",
        "--config.train.num_steps=300", "--config.optim.warmup_steps=3",
        "--config.train.log_every_steps=5",
        "--config.train.checkpoint_every_steps=100")


def launch(workdir, *overrides, processes=1, devices=1):
  """Starts the processes of a run (each in its own process group)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  base = [sys.executable, "-m", "experiments.train",
          "--config=experiments/configs/test.py", f"--workdir={workdir}",
          f"--jax_num_cpu_devices={devices}", *overrides]
  port = free_port()
  commands = ([base + [f"--coordinator_address=127.0.0.1:{port}",
                       f"--num_processes={processes}", f"--process_id={i}"]
               for i in range(processes)] if processes > 1 else [base])
  return [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True,
                           start_new_session=True) for c in commands]


def wait_for_step(workdir, step, procs):
  """Polls metrics.jsonl until a record at or past ``step``."""
  import json  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.monotonic() + TIMEOUT_S
  while time.monotonic() < deadline:
    if any(p.poll() is not None for p in procs):
      raise AssertionError("a process ended early: "
                           + procs[0].stderr.read()[-2000:])
    try:
      steps = [json.loads(line)["step"] for line in open(path)]
    except (OSError, ValueError):
      steps = []
    if steps and max(steps) >= step:
      return max(steps)
    time.sleep(0.05)
  raise AssertionError(f"no step {step} in {path}")


def finish(procs):
  codes = []
  try:
    for p in procs:
      p.communicate(timeout=TIMEOUT_S)
      codes.append(p.returncode)
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  return codes


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
  train(workdir, *LONG)
  return workdir


@pytest.mark.parametrize("processes, devices", [
    # One process: test_training's killed runs cover its resume (CI time).
    pytest.param(1, 1, marks=pytest.mark.slow),
    # Fast tier: test_training's killed runs and
    # test_the_compiled_loss_streams_per_device_rows.
    pytest.param(2, 2, marks=pytest.mark.slow)])
def test_sigterm_saves_exits_75_and_the_rerun_ends_equal(
    tmp_path, uninterrupted, processes, devices):
  workdir = tmp_path / "run"
  procs = launch(workdir, *LONG, processes=processes, devices=devices)
  wait_for_step(workdir, 40, procs)
  os.kill(procs[-1].pid, signal.SIGTERM)  # one process is enough
  assert finish(procs) == [75] * processes
  steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints")
                 if s.isdigit())
  saved = steps[-1]
  assert 40 < saved < 300, steps  # the step after the notice, not the end
  train(workdir, *LONG, processes=processes, devices=devices)
  assert_same(workdir, uninterrupted, 1e-9)


@pytest.mark.slow  # ~22 s; test_training kills and resumes one process, and
# the SIGTERM case above resumes a two-process run from its checkpoint.
def test_sigkill_of_every_process_loses_only_the_last_steps(tmp_path,
                                                            uninterrupted):
  workdir = tmp_path / "run"
  procs = launch(workdir, *LONG, processes=2, devices=2)
  wait_for_step(workdir, 150, procs)
  for p in procs:  # the whole group: no survivor waits on a dead peer
    os.killpg(p.pid, signal.SIGKILL)
  assert all(code != 0 for code in finish(procs))
  train(workdir, *LONG, processes=2, devices=2)
  assert_same(workdir, uninterrupted, 1e-9)


class FakeStore:
  """The coordination service's key-value store, in memory."""

  def __init__(self):
    self.values = {}

  def key_value_set(self, key, value, allow_overwrite=False):
    assert allow_overwrite or key not in self.values
    self.values[key] = value

  def key_value_dir_get(self, prefix):
    return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


def test_peer_watch_names_only_a_process_gone_silent():
  from experiments import cli  # pylint: disable=g-import-not-at-top
  store, now = FakeStore(), [0.0]
  watch = [cli.PeerWatch(store, i, 3, 10.0, None, clock=lambda: now[0])
           for i in range(3)]

  def tick(*ids):
    now[0] += 1.0
    return [watch[i].check() for i in ids]

  for _ in range(20):  # all beat
    assert tick(0, 1, 2) == [[], [], []]
  for _ in range(20):  # process 0 stalls (the others would name it) ...
    tick(1, 2)
  assert tick(0) == [[]]  # ... and, going on, accuses nobody
  assert tick(0, 1, 2) == [[], [], []]
  watch[1].stop()  # leaves by itself; process 2 goes silent
  assert store.values[cli.PeerWatch.PREFIX + "1"] == "exit"
  for _ in range(11):  # 2's last beat reached 0 one tick late
    assert tick(0) == [[]]
  assert tick(0) == [[2]]


# experiments.cli's default --heartbeat_timeout_seconds.
HEARTBEAT_S = 60


@pytest.mark.slow  # fast tier: test_peer_watch_names_only_a_process_gone_silent
def test_a_killed_process_is_named_by_the_survivor(tmp_path):
  """SIGKILL of process 1: process 0 stops within twice the heartbeat
  timeout with one line naming it, not JAX's abort and thread dump."""
  import time  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  procs = launch(workdir, "--config.train.num_steps=100000",
                 "--config.train.log_every_steps=5",
                 "--config.train.checkpoint_every_steps=50", processes=2)
  try:
    wait_for_step(workdir, 10, procs)
    os.killpg(procs[1].pid, signal.SIGKILL)
    start = time.monotonic()
    try:
      _, err = procs[0].communicate(timeout=2 * HEARTBEAT_S)
    except subprocess.TimeoutExpired:
      raise AssertionError("process 0 still runs after twice the heartbeat "
                           "timeout") from None
    seconds = time.monotonic() - start
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  assert seconds < 2 * HEARTBEAT_S
  assert "Fatal Python error" not in err and "Traceback" not in err, err[-3000:]
  assert procs[0].returncode == 1, err[-3000:]
  assert err.strip().splitlines()[-1] == (
      "train: error: process 1 of 2 stopped sending heartbeats (killed, "
      "crashed or its host is down); rerun all 2 processes with the same "
      "flags: the run resumes from its last checkpoint."), err[-3000:]


def test_the_compiled_loss_streams_per_device_rows():
  code = textwrap.dedent("""
      import jax
      jax.config.update("jax_num_cpu_devices", 2)
      import numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec
      from experiments.configs import test as test_config
      from pgmoe_jax.training import config as config_lib, losses
      mesh = Mesh(np.asarray(jax.devices()), ("batch",))
      batch = NamedSharding(mesh, PartitionSpec("batch"))
      config = test_config.get_config()
      config.loss.unlabelled_batch_size = 64
      run = config_lib.resolve(config)
      model, key = run.model, jax.random.key(0)
      params = jax.jit(model.init, out_shardings=NamedSharding(
          mesh, PartitionSpec()))(key, np.zeros((1, 16, 16), np.float32))
      for sharding in (None, batch):
        loss = losses.make_loss_fn(
            run, lambda p, v: model.apply({"params": p}, v), sharding)
        text = jax.jit(loss).lower(params["params"], {}, key,
                                   0).compile().as_text()
        print("f32[32,16,16]" in text, "f32[64,16,16]" in text)
      """)
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       env=dict(os.environ, JAX_PLATFORMS="cpu",
                                PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=120,
                       check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  # Without the batch sharding every device draws the whole batch of 64;
  # with it, each draws its 32 rows (and nothing holds all 64).
  assert out.stdout.split() == ["False", "True", "True", "False"]

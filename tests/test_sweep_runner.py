"""The local runner: jobs, failures, signals, and a sweep killed midway."""

import csv
import glob
import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pgmoe_jax import locks
from pgmoe_jax.workflows import leaderboard
from pgmoe_jax.workflows import sweep
from pgmoe_jax.workflows import sweep_runner
from pgmoe_jax.workflows import sweep_slots
from test_sweep import ROOT
from test_sweep import TEST_SWEEP
from test_sweep import quick_config
from test_sweep import run_module
from test_sweep import write

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc")


def processes_with(text: str, but=()) -> list[int]:
  """Processes whose command line holds ``text``, except ``but``."""
  out = []
  for entry in os.listdir("/proc"):
    if entry.isdigit() and int(entry) not in (os.getpid(), *but):
      try:
        with open(f"/proc/{entry}/cmdline", "rb") as f:
          if text.encode() in f.read():
            out.append(int(entry))
      except OSError:
        pass
  return out


def headers(log_path) -> int:
  with open(log_path) as f:
    return sum(line.startswith(sweep_runner.LOG_HEADER) for line in f)


def test_slot_env_gives_each_slot_its_share():
  assert sweep_slots.slot_env(0, 1, {}) == {}
  env = sweep_slots.slot_env(1, 2, {"XLA_FLAGS": "--xla_dump_to=x",
                                    "JAX_PLATFORMS": "cpu"})
  assert env["XLA_FLAGS"].startswith(
      "--xla_dump_to=x --xla_force_host_platform_device_count=1")
  assert "CUDA_VISIBLE_DEVICES" not in env
  env = sweep_slots.slot_env(3, 4, {"CUDA_VISIBLE_DEVICES": "4,5"})
  assert env["CUDA_VISIBLE_DEVICES"] == "5"
  assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  cpus = sweep_slots.available_cpus()
  if len(cpus) >= 2:
    a, b = sweep_slots.slot_cpus(0, 2), sweep_slots.slot_cpus(1, 2)
    assert a and b and not set(a) & set(b)
  assert sweep_slots.slot_cpus(0, 1) is None


def test_runner_reports_a_failure_and_reruns_it_only_on_request(tmp_path):
  done_file = str(tmp_path / "ok.done")
  code = ("import sys\nfor i in range(30): print('line', i)\n"
          "print('the cause'); sys.exit(3)")
  jobs = [
      sweep_runner.Job("ok", (sys.executable, "-c",
                              f"open({done_file!r}, 'w').close()"),
                       str(tmp_path / "logs" / "ok.log"), ("ok",),
                       lambda: os.path.exists(done_file)),
      sweep_runner.Job("bad", (sys.executable, "-c", code),
                       str(tmp_path / "logs" / "bad.log"), ("bad",),
                       lambda: False)]
  messages, progress = [], io.StringIO()
  summary = sweep_runner.run_local(jobs, 2, echo=messages.append,
                                   stream=progress)
  assert summary.finished == ["ok"] and summary.failed == {"bad": 3}
  assert "bad: failed with exit code 3" in messages[0]
  assert "the cause" in messages[0] and "line 29" in messages[0]
  failure = sweep_runner.read_json(str(tmp_path / "logs" / "bad.failed"))
  assert failure["returncode"] == 3 and failure["tail"][-1] == "the cause"
  assert len(failure["tail"]) == sweep_runner.TAIL_LINES
  assert sweep_runner.read_json(str(tmp_path / "logs" / "ok.json"))[
      "returncode"] == 0
  assert "sweep: 1/2 done, 0 running, 1 failed" in progress.getvalue()

  messages.clear()
  summary = sweep_runner.run_local(jobs, 2, echo=messages.append,
                                   stream=io.StringIO())
  assert summary.done == ["ok"] and summary.skipped_failed == ["bad"]
  assert "bad: skipped, failed before (exit code 3" in messages[0]
  assert headers(tmp_path / "logs" / "bad.log") == 1
  assert headers(tmp_path / "logs" / "ok.log") == 1

  summary = sweep_runner.run_local(jobs, 2, rerun_failed=True,
                                   echo=messages.append, stream=io.StringIO())
  assert summary.failed == {"bad": 3} and not summary.ok
  assert headers(tmp_path / "logs" / "bad.log") == 2


@pytest.mark.slow
def test_run_local_trains_four_trials_two_at_a_time(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)  # where python -m experiments.train works
  config_path = quick_config(str(tmp_path))
  config = sweep.load_config_file(config_path)
  root = str(tmp_path / "sweep")
  trials = sweep.make_trials(root, sweep.load_sweep(TEST_SWEEP))
  jobs = sweep.trial_jobs(trials, sweep.check_trials(config, trials),
                          config_path)
  messages = []
  summary = sweep_runner.run_local(jobs, 2, echo=messages.append,
                                   stream=io.StringIO())
  assert summary.ok and not messages, messages
  assert sorted(summary.finished) == sorted(t.name for t in trials)
  assert {leaderboard.trial_status(t, 6) for t in trials} == {"done"}
  leaderboard.summarize(root, trials, "train/loss", config=config)
  with open(os.path.join(root, "sweep.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
  with open(trials[0].log_path) as f:
    log = f.read()
  assert "Finished at step 6" in log and "fork" not in log


@linux_only
def test_runner_stops_its_children_on_sigterm(tmp_path):
  tag = f"sleeper-{os.getpid()}-{time.time_ns()}"
  log = str(tmp_path / "logs" / "sleeper.log")
  script = textwrap.dedent(f"""\
      import sys
      from pgmoe_jax.workflows import sweep_runner
      job = sweep_runner.Job(
          "sleeper", (sys.executable, "-c", "import time; time.sleep(600)",
                      {tag!r}), {log!r}, ("sleeper",), lambda: False)
      try:
        sweep_runner.run_local([job], 1)
      except sweep_runner.Interrupted as e:
        sys.exit(e.exit_code)
      """)
  runner_err = tmp_path / "runner.stderr"
  with open(runner_err, "wb") as err:
    runner = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=err)
  try:
    # One scan decides: a second scan can miss the job while its launcher
    # execs it (the command line reads empty for that moment).
    deadline, started = time.time() + 300, []
    while not started and time.time() < deadline:
      started = processes_with(tag, [runner.pid])
      if not started:
        time.sleep(0.05)
    assert started, (
        f"the job did not start in 300 s; runner exit code "
        f"{runner.poll()}, its stderr: {runner_err.read_text()[-2000:]!r}")
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    assert not processes_with(tag)
    assert not os.path.exists(sweep_runner.failure_path(
        os.path.dirname(log), "sleeper"))
  finally:
    runner.kill()
    for pid in processes_with(tag):
      os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # fast tier: test_runner_stops_its_children_on_sigterm
@linux_only
def test_sweep_survives_sigkill_and_resumes(tmp_path):
  """4 trials, 2 at once; SIGKILL midway kills every trial; a rerun skips
  the finished ones and completes sweep.csv."""
  root = str(tmp_path / "sweep")
  config = quick_config(str(tmp_path))
  args = ("experiments.sweep", f"--config={config}", f"--sweep={TEST_SWEEP}",
          f"--workdir={root}", "--parallel=2", "--metric=train/loss")
  trials_dir = os.path.join(root, "trials") + os.sep
  runner = subprocess.Popen(
      [sys.executable, "-m", *args], cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    finished, running = [], []
    while time.time() < deadline and runner.poll() is None:
      finished = glob.glob(os.path.join(root, "logs", "*.json"))
      running = processes_with(trials_dir) if finished else []
      if running:
        break
      time.sleep(0.05)
    assert finished and running, "not killed midway"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.time() + 5
    while processes_with(trials_dir) and time.time() < deadline:
      time.sleep(0.05)
    assert not processes_with(trials_dir), "a trial outlived the runner"
  finally:
    runner.kill()
    for pid in processes_with(trials_dir):
      os.kill(pid, signal.SIGKILL)

  out = run_module(*args)
  assert out.returncode == 0, out.stderr[-3000:]
  for marker in finished:
    assert headers(marker[:-len(".json")] + ".log") == 1, marker
  with open(os.path.join(root, "sweep.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
  assert {r["step"] for r in rows} == {"6"}
  assert "| seed | optim.learning_rate | status |" in out.stdout
  # A different sweep into the same root is refused before anything runs.
  other = write(tmp_path / "other.py",
                "def get_sweep():\n  return [{'seed': 7}]\n")
  out = run_module(*args[:2], f"--sweep={other}", *args[3:])
  assert out.returncode == 1
  assert "holds a sweep with other trials" in out.stderr
  assert not os.path.exists(os.path.join(root, "trials", "seed=7"))


# Fast tier: the locks' tests in this module.
@pytest.mark.slow
@linux_only
def test_a_second_runner_on_one_root_is_refused(tmp_path):
  """The root is locked while a runner lives: a lock file left behind does
  not block it, a second runner stops in one line, and the first's trials
  finish unharmed."""
  root = tmp_path / "sweep"
  config = quick_config(str(tmp_path))
  two = write(tmp_path / "two.py",
              "def get_sweep():\n  return [{'seed': 0}, {'seed': 1}]\n")
  args = ("experiments.sweep", f"--config={config}", f"--sweep={two}",
          f"--workdir={root}", "--metric=train/loss")
  # What a runner killed with -9 leaves: the file, naming a dead process.
  write(root / locks.LOCK_FILE, '{"pid": 999999999, "host": "gone", '
        '"since": "yesterday", "command": "python -m experiments.sweep"}\n')
  trials_dir = os.path.join(root, "trials") + os.sep
  first = subprocess.Popen(
      [sys.executable, "-m", *args], cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  try:
    deadline, started = time.time() + 240, []
    while not started and time.time() < deadline:
      assert first.poll() is None, first.communicate()[1][-3000:]
      started = processes_with(trials_dir)
      if not started:
        time.sleep(0.05)
    assert started, "no trial started in 240 s"
    second = run_module(*args, "--parallel=2")
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith(f"sweep: error: {root} is in use by another "
                           f"sweep runner (process {first.pid} on "), line
    _, err = first.communicate(timeout=240)
  finally:
    first.kill()
    for pid in processes_with(trials_dir):
      os.kill(pid, signal.SIGKILL)
  assert first.returncode == 0, err[-3000:]
  trials = sweep.make_trials(str(root), sweep.load_sweep(two))
  assert {leaderboard.trial_status(t, 6) for t in trials} == {"done"}
  assert not glob.glob(os.path.join(root, "logs", "*.failed"))
  for trial in trials:
    assert headers(trial.log_path) == 1, trial.name
  # The leaderboard alone needs no lock (nor does --print_commands).
  with locks.exclusive(str(root)):
    out = run_module(*args, "--summarize")
  assert out.returncode == 0, out.stderr[-3000:]

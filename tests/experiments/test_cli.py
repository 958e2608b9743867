"""The two commands end to end: train (table + plot) and sweep."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_train_command_prints_table_and_plots(tmp_path, mock_domains):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config", os.path.join(ROOT, "configs", "mock.py") + ":smoke",
       f"--config.test_domains=('{mock_domains[-1]}',)",
       "--config.hparams.sam.rho=0.1", "--config.algorithm=sam",
       f"--workdir={tmp_path}", "--plot"],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"| algorithm | {mock_domains[-1]} | avg | seeds |" in proc.stdout
  assert "| sam |" in proc.stdout
  assert (tmp_path / "results.md").exists()
  assert (tmp_path / "results.csv").exists()
  assert (tmp_path / "curves.png").stat().st_size > 1000


def test_sweep_over_algorithms_and_seeds(smoke_config, tmp_path):
  c = smoke_config
  c.num_steps, c.eval_every, c.checkpoint_every = 2, 2, 2
  c.sweep.algorithms, c.sweep.seeds = "erm,vrex", "0,1"
  (table,) = sweep.sweep(c, str(tmp_path))
  assert sorted(table["accs"]) == ["erm", "vrex"]
  assert len(table["accs"]["erm"][c.test_domains[0]]) == 2
  md = (tmp_path / "sweep.md").read_text().splitlines()
  assert md[2].startswith("| erm | ") and " ± " in md[2]
  assert md[3].startswith("| vrex | ") and md[3].endswith("| 2 |")
  assert (tmp_path / "erm" / "trial_0" / "seed_1" / "results.csv").exists()


def test_train_command_unprepared_data_is_a_clean_error(tmp_path):
  # The full-MNIST datasets need TFDS 'mnist' prepared (never downloaded by
  # default): a one-line error naming the flag, exit code 2, no traceback.
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config", os.path.join(ROOT, "configs", "rotated_mnist.py") + ":smoke",
       "--config.dataset=rotated_mnist_full",
       f"--config.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'run'}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr
  assert "--config.download=True" in errors[0]


# ------------------------------------------------- one-line errors (CLI) ----
def _train(*args, env=None, prefix=(), timeout=300):
  """Runs ``python -m experiments.train`` (mock smoke unless --config given)."""
  if not any(a.startswith("--config") and "." not in a.split("=")[0]
             for a in args):
    args = ("--config", os.path.join(ROOT, "configs", "mock.py") + ":smoke",
            *args)
  cmd = [sys.executable, *prefix] if prefix else [
      sys.executable, "-m", "experiments.train"]
  return subprocess.run(
      cmd + list(args), capture_output=True, text=True, cwd=ROOT,
      timeout=timeout, env={**os.environ, "JAX_PLATFORMS": "cpu",
                            **(env or {})})


def _one_error_line(proc, code=2):
  """The single stderr line of a failed command (exit ``code``)."""
  assert proc.returncode == code, proc.stderr[-3000:]
  lines = proc.stderr.splitlines()
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
  return lines[0]


@pytest.mark.parametrize("args,expected", [
    # A typo in a field: the closest field, in one line.
    (["--config.learning_rat=0.1"],
     "error: --config.learning_rat: no such field; did you mean "
     "'learning_rate'?"),
    (["--config.hparams.foo=0.1"],
     "error: --config.hparams.foo: no such field; config.hparams has the "
     "fields ['coral', 'erm'"),
    # An hparam that the chosen algorithm does not read.
    (["--config.hparams.sam.rho=0.5"],
     "error: config.hparams.sam.rho: not used by algorithm 'erm'; it is used "
     "by ['sam']"),
    (["--config.algorithm=nope", "--config.hparams.sam.rho=0.5"],
     "error: config.algorithm: unknown algorithm 'nope'; valid choices"),
    (["--config", "configs/nope.py"],
     "error: --config=configs/nope.py: [Errno 2] No such file or directory"),
    (["--config", "configs/nope.py", "--config.num_steps=3"],
     "error: --config=configs/nope.py: [Errno 2] No such file or directory"),
    (["--config", "configs/mock.py:large"],
     "error: flag --config=configs/mock.py:large: Error whilst parsing config "
     "file: ... ValueError: configs/mock.py: unknown preset 'large'"),
    (["--workdirr=/tmp/x"], "error: Unknown command line flag 'workdirr'"),
    # Multi-host flags: missing, or given without --distributed.
    (["--distributed"],
     "error: --distributed: jax.distributed.initialize() failed "
     "(coordinator_address should be defined); no cluster environment"),
    (["--distributed", "--num_processes=2", "--process_id=0"],
     "error: --distributed: --coordinator_address is missing"),
    (["--coordinator_address=127.0.0.1:1234"],
     "error: --coordinator_address is for multi-host runs: add --distributed"),
])
def test_command_errors_are_one_line(tmp_path, args, expected):
  proc = _train(*args, f"--workdir={tmp_path / 'run'}", timeout=120)
  line = _one_error_line(proc)
  assert line.startswith(expected), line
  assert not (tmp_path / "run").exists()  # failed before touching it


def test_sweep_refuses_an_hparam_no_swept_algorithm_uses(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweep",
       "--config", os.path.join(ROOT, "configs", "mock.py") + ":smoke",
       "--algorithms=erm,vrex", "--config.hparams.sam.rho=0.5",
       f"--workdir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert _one_error_line(proc) == (
      "error: config.hparams.sam.rho: not used by any of the algorithms "
      "['erm', 'vrex']; it is used by ['sam']")



def test_sweep_shorthand_for_a_field_the_study_does_not_sweep(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweep",
       "--config", os.path.join(ROOT, "configs", "ensemble.py") + ":smoke",
       "--algorithms=erm", f"--workdir={tmp_path / 'sw'}"],
      capture_output=True, text=True, cwd=ROOT, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert _one_error_line(proc) == (
      "error: --algorithms: config.task='ensemble' sweeps seeds; it has no "
      "config.sweep.algorithms")
  assert not (tmp_path / "sw").exists()

# A disk that refuses writes under a directory (as root, chmod cannot make one
# read-only): `open` for writing there fails with the given errno.
_BROKEN_DISK = """
import builtins, os, runpy, sys
root, code = sys.argv.pop(1), int(sys.argv.pop(1))
real_open = builtins.open
def broken_open(file, mode="r", *args, **kwargs):
  if str(file).startswith(root) and any(c in mode for c in "wax+"):
    raise OSError(code, os.strerror(code), file)
  return real_open(file, mode, *args, **kwargs)
builtins.open = broken_open
runpy.run_module("experiments.train", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_unwritable_workdir_fails_before_loading_data(tmp_path, code):
  workdir = tmp_path / "run"
  proc = _train("--config", os.path.join(ROOT, "configs", "digits.py:smoke"),
                f"--config.data_dir={tmp_path / 'tfds'}",
                f"--workdir={workdir}",
                prefix=("-c", _BROKEN_DISK, str(workdir), str(code)))
  line = _one_error_line(proc)
  assert line == (f"error: --workdir {workdir} cannot be written: "
                  f"{os.strerror(code)}")
  assert not (tmp_path / "tfds").exists()  # checked before loading data


def test_resume_is_quiet_and_another_config_is_refused(tmp_path, mock_domains):
  d0, d1 = mock_domains[:2]
  first = _train(f"--config.test_domains=('{d0}',)", f"--workdir={tmp_path}")
  assert first.returncode == 0 and first.stderr == "", first.stderr[-3000:]
  # Resuming (more steps) prints nothing on stderr either.
  again = _train(f"--config.test_domains=('{d0}',)", "--config.num_steps=8",
                 f"--workdir={tmp_path}")
  assert again.returncode == 0 and again.stderr == "", again.stderr[-3000:]
  assert "resumed from step 6" in again.stdout
  table = (tmp_path / "results.md").read_text()
  # Another config file into the same workdir: refused before its data is
  # built, naming the fields that differ; the table and folders untouched.
  other = _train("--config", os.path.join(ROOT, "configs", "digits.py:smoke"),
                 f"--config.data_dir={tmp_path / 'tfds'}",
                 f"--workdir={tmp_path}")
  line = _one_error_line(other)
  assert line.startswith("error: config.dataset: 'digits_rotated' here, "
                         "'mock' there; config.name: 'digits' here, 'mock' "
                         "there; config.test_domains: [] here, ['d0'] there: "
                         "the config differs"), line
  assert f"the config differs from the run in {tmp_path}/test_{d0}" in line
  assert not (tmp_path / "tfds").exists()
  # The same config file with another held-out domain and model: refused.
  mixed = _train(f"--config.test_domains=('{d1}',)", "--config.model=mlp",
                 f"--workdir={tmp_path}")
  assert _one_error_line(mixed).startswith(
      "error: config.model: 'mlp' here, 'mlp_tiny' there; "
      f"config.test_domains: ['{d1}'] here, ['{d0}'] there:")
  assert not (tmp_path / f"test_{d1}").exists()
  assert (tmp_path / "results.md").read_text() == table


def test_diverging_run_is_one_line_exit_1(tmp_path, mock_domains):
  # A huge step size: the loss of step 1 (before its update) is finite, the
  # parameter norm after it overflows.
  proc = _train(f"--config.test_domains=('{mock_domains[0]}',)",
                "--config.optimizer=sgd", "--config.learning_rate=1e30",
                f"--workdir={tmp_path}")
  line = _one_error_line(proc, code=1)  # no tensorboardX "NaN or Inf" lines
  assert line.startswith(
      "error: the parameters diverged at step 1: parameter norm inf after the "
      "update (update norm inf, gradient norm 1.33), from a finite loss of "
      "1.434 before it (algorithm 'erm', learning_rate 1e+30); stopped, no "
      "checkpoint yet."), line


_CTRL_C_ABLE = """
import runpy, signal
# Python's Ctrl-C handler, even where SIGINT is inherited as ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
runpy.run_module("experiments.train", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_exits_130_in_one_line_and_the_rerun_resumes(tmp_path,
                                                            mock_domains):
  args = [sys.executable, "-c", _CTRL_C_ABLE, "--config",
          os.path.join(ROOT, "configs", "mock.py") + ":smoke",
          f"--config.test_domains=('{mock_domains[0]}',)",
          "--config.num_steps=100000", "--config.checkpoint_every=2",
          "--config.eval_every=100000", f"--workdir={tmp_path}"]
  proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  ckpt_dir = tmp_path / f"test_{mock_domains[0]}" / "checkpoints"
  steps = lambda: sorted(int(p.name) for p in ckpt_dir.glob("*")
                         if p.name.isdigit())
  deadline = time.time() + 240
  while not steps() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(0.3)  # somewhere in the steps and saves that follow
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  lines = err.splitlines()
  assert proc.returncode == 130 and len(lines) == 1, err[-3000:]
  good = steps()[-1]
  assert lines[0].startswith("interrupted: stopped by Ctrl-C after "), lines
  assert f"a rerun of the same command resumes from step {good} " in lines[0]
  rerun = _train(f"--config.test_domains=('{mock_domains[0]}',)",
                 f"--config.num_steps={good + 2}",
                 "--config.checkpoint_every=2", "--config.eval_every=100000",
                 f"--workdir={tmp_path}")
  assert rerun.returncode == 0 and rerun.stderr == "", rerun.stderr[-3000:]
  assert f"resumed from step {good} " in rerun.stdout

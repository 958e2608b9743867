"""The two commands end to end: train (table + plot) and sweep."""

import os
import subprocess
import sys

from experiments import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_train_command_prints_table_and_plots(tmp_path, mock_domains):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config", os.path.join(ROOT, "configs", "mock.py") + ":smoke",
       f"--config.test_domains=('{mock_domains[-1]}',)",
       "--config.hparams.sam_rho=0.1", "--config.algorithm=sam",
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
  runs = sweep.sweep(c, str(tmp_path), ["erm", "vrex"], [0, 1])
  assert sorted(runs) == ["erm", "vrex"] and len(runs["erm"]) == 2
  md = (tmp_path / "sweep.md").read_text().splitlines()
  assert md[2].startswith("| erm | ") and " ± " in md[2]
  assert md[3].startswith("| vrex | ") and md[3].endswith("| 2 |")
  assert (tmp_path / "erm" / "seed_1" / "results.csv").exists()


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

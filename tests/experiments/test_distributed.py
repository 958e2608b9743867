"""``--distributed`` set up by hand: two local CPU processes, one model.

The two processes (one CPU device each) meet over the loopback address
through the flags ``--coordinator_address``, ``--num_processes`` and
``--process_id``, and must train what one process with two devices trains on
the same global batch: same metrics, same final parameters.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from experiments.studies import dg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir, *flags, env=None):
  """``experiments.train`` on mock:smoke in a process with one CPU device."""
  args = [sys.executable, "-m", "experiments.train",
          "--config", os.path.join(ROOT, "configs", "mock.py") + ":smoke",
          "--config.test_domains=('d0',)", "--config.num_steps=4",
          "--config.eval_every=2", "--config.checkpoint_every=4",
          "--config.log_every=1", f"--workdir={workdir}", *flags]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {}),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, env=env)


def _finish(proc):
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-3000:]
  return out


def _final_params(workdir):
  """The saved params, restored onto this process's first device."""
  import jax
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.path.join(workdir, "test_d0", "checkpoints", "4",
                                      "state"))
  ckpt = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
      ckpt.metadata(path).item_metadata)
  state = ckpt.restore(path, target)
  return {k: np.asarray(v) for k, v in _flatten(state["params"]).items()}


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}/{k}"))
    return out
  return {prefix: tree}


def _rows(workdir):
  with open(os.path.join(workdir, "test_d0", "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_two_processes_train_the_same_model_as_one(tmp_path, smoke_config):
  port = _free_port()
  address = f"127.0.0.1:{port}"
  two = [_start(tmp_path / "two", "--distributed",
                f"--coordinator_address={address}", "--num_processes=2",
                f"--process_id={i}",
                env={"JAX_COORDINATOR_BIND_ADDRESS": address})
         for i in (0, 1)]
  # Meanwhile, here: one process, two of its (eight) CPU devices.
  c = smoke_config
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every = 4, 2, 4, 1
  c.num_devices = 2
  dg.run(c, str(tmp_path / "one"))
  out_two = [_finish(p) for p in two]
  # Process 0 alone prints the table (and writes the files).
  assert "| erm |" in out_two[0]
  assert "| erm |" not in out_two[1] and "test accuracy" not in out_two[1]
  rows_one, rows_two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
  assert [(r["step"], r["split"]) for r in rows_one] == [
      (r["step"], r["split"]) for r in rows_two]
  for a, b in zip(rows_one, rows_two):
    for k in set(a) - {"step", "split"}:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-6, err_msg=k)
  p1, p2 = _final_params(tmp_path / "one"), _final_params(tmp_path / "two")
  assert p1.keys() == p2.keys() and p1
  for k in p1:
    np.testing.assert_allclose(p1[k], p2[k], rtol=1e-6, atol=1e-7, err_msg=k)

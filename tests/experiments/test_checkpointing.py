"""Checkpointer: keep-last-k, latest good step, corrupt/partial fallback."""

import os

import jax.numpy as jnp
import pytest

from experiments import checkpointing


def _state(v):
  return {"w": jnp.full((3,), v, jnp.float32), "step": jnp.int32(v)}


def _corrupt(step_dir):
  # Truncate every data file of the step: the restore must fail.
  for root, _, files in os.walk(step_dir):
    for name in files:
      if not name.startswith("_CHECKPOINT"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"\0garbage")


def test_keep_last_k_and_restore_latest(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path / "ck"), max_to_keep=2)
  assert ck.restore_latest(_state(0)) is None
  for s in (1, 2, 3):
    ck.save(s, _state(s), {"step": s})
  assert ck.all_steps() == [2, 3]
  step, state, meta = ck.restore_latest(_state(0))
  assert step == 3 and meta == {"step": 3}
  assert float(state["w"][0]) == 3.0 and int(state["step"]) == 3
  ck.close()


def test_corrupt_latest_falls_back_with_warning(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path / "ck"), max_to_keep=3)
  for s in (1, 2):
    ck.save(s, _state(s), {"step": s})
  _corrupt(str(tmp_path / "ck" / "2"))
  with pytest.warns(checkpointing.CorruptCheckpointWarning, match="step 2"):
    step, state, _ = ck.restore_latest(_state(0))
  assert step == 1 and float(state["w"][0]) == 1.0
  assert ck.all_steps() == [1]
  assert (tmp_path / "corrupt_checkpoints" / "2").exists()
  # Saving step 2 again works after the fallback.
  ck.save(2, _state(5), {"step": 2})
  assert ck.restore_latest(_state(0))[0] == 2
  ck.close()


def test_partial_checkpoint_without_meta_is_skipped(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path / "ck"), max_to_keep=3)
  ck.save(1, _state(1), {"step": 1})
  ck.save(2, _state(2), {"step": 2})
  import shutil
  shutil.rmtree(tmp_path / "ck" / "2" / "meta")
  with pytest.warns(checkpointing.CorruptCheckpointWarning):
    assert ck.restore_latest(_state(0))[0] == 1
  ck.close()


def test_ctrl_c_during_a_save_is_raised_after_it(tmp_path, monkeypatch):
  """A Ctrl-C that arrives mid-save leaves the step whole, then stops."""
  import signal
  ck = checkpointing.Checkpointer(str(tmp_path / "ck"), max_to_keep=3)
  ck.save(1, _state(1), {"step": 1})
  real_save = ck._manager.save

  def interrupted_save(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # delivered while the save runs
    return real_save(*args, **kwargs)

  monkeypatch.setattr(ck._manager, "save", interrupted_save)
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt):
      ck.save(2, _state(2), {"step": 2})
  finally:
    signal.signal(signal.SIGINT, previous)
  ck.close()
  again = checkpointing.Checkpointer(str(tmp_path / "ck"), max_to_keep=3)
  step, state, meta = again.restore_latest(_state(0))
  assert step == 2 and meta == {"step": 2} and float(state["w"][0]) == 2.0
  again.close()

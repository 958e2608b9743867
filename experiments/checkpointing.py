"""Checkpoints: the only module of the training program that uses orbax.

A checkpoint holds the train state (step, params, optimizer/rule state: a pytree
of arrays) and a small JSON ``meta`` record (model-selection bookkeeping). Saves
are synchronous and atomic (orbax writes into a temporary directory and renames
it when complete), so a run killed mid-save leaves at most a partial temporary
directory that orbax never lists. Ctrl-C during a save is held until the
save is complete (then raised), so an interrupted run always leaves its last
checkpoint whole and no orbax thread writing. ``restore_latest`` walks the
saved steps from the newest down; a step that fails to restore (corrupt or
partial files) is moved to ``<directory>/../corrupt_checkpoints/`` with a
warning, and the previous step is tried.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import warnings
from typing import Any, Optional, Tuple

import jax
import orbax.checkpoint as ocp


class CorruptCheckpointWarning(UserWarning):
  """A saved checkpoint could not be restored and was skipped."""


@contextlib.contextmanager
def _ctrl_c_held():
  """Holds a Ctrl-C (SIGINT) until the block is done, then raises it.

  Only where Python's own handler is installed (main thread, SIGINT neither
  ignored nor handled by someone else).
  """
  if (threading.current_thread() is not threading.main_thread() or
      signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield
    return
  received = []
  previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    if received:
      raise KeyboardInterrupt


class Checkpointer:
  """Periodic save / resume from the latest good step / keep the last k.

  Args:
    directory: where the step directories live (created if missing).
    max_to_keep: number of most recent checkpoints kept on disk.

  Example:
    >>> ck = Checkpointer('/tmp/ck', max_to_keep=2)
    >>> ck.save(10, {'w': jnp.zeros(3)}, {'step': 10})
    >>> step, state, meta = ck.restore_latest({'w': jnp.zeros(3)})
  """

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self._manager = self._make_manager()

  def _make_manager(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self.max_to_keep, create=True,
        enable_async_checkpointing=False)
    return ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self):
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves ``state`` (pytree of arrays) and ``meta`` (JSON) as ``step``.

    A Ctrl-C that arrives meanwhile is raised once the step is saved.
    """
    with _ctrl_c_held():
      self._manager.save(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave(meta)),
          force=True)
      self._manager.wait_until_finished()

  def _quarantine(self, step: int, error: Exception) -> None:
    src = os.path.join(self.directory, str(step))
    dst_root = os.path.join(os.path.dirname(self.directory),
                            "corrupt_checkpoints")
    os.makedirs(dst_root, exist_ok=True)
    dst = os.path.join(dst_root, str(step))
    if os.path.exists(dst):
      shutil.rmtree(dst)
    if os.path.exists(src):
      shutil.move(src, dst)
    warnings.warn(
        f"checkpoint step {step} in {self.directory} could not be restored "
        f"({type(error).__name__}: {str(error)[:300]}); moved it to {dst} and "
        "falling back to the previous checkpoint", CorruptCheckpointWarning,
        stacklevel=3)
    self._manager.close()
    self._manager = self._make_manager()

  def restore_latest(self, target: Any) -> Optional[Tuple[int, Any, dict]]:
    """Restores the newest restorable checkpoint.

    Args:
      target: a pytree with the structure, shapes, dtypes and shardings of the
        state (concrete arrays or ``jax.ShapeDtypeStruct``).

    Returns:
      ``(step, state, meta)``, or None when no checkpoint can be restored.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    for step in reversed(self.all_steps()):
      try:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                meta=ocp.args.JsonRestore()))
        state, meta = restored["state"], restored["meta"]
        if meta is None or "step" not in meta or meta["step"] != step:
          raise ValueError(f"meta record missing or for another step: {meta}")
        return step, state, meta
      except Exception as e:  # pylint: disable=broad-except
        self._quarantine(step, e)
    return None

  def close(self) -> None:
    self._manager.close()

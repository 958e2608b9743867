"""The spec format of the family-wide loss test (``tests/losses/test_common.py``).

Every module ``tests/losses/specs_<topic>.py`` defines ``SPECS: list[LossSpec]``;
the common test gathers the specs of all such modules and requires that their
names equal ``diversity_jax.losses.__all__`` exactly, so a forgotten entry fails.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """How the common test calls one public loss.

  Attributes:
    name: the public name in ``diversity_jax.losses``.
    make_args: ``(key, batch, dtype) -> tuple`` of positional arguments. The
      first argument is the float input (logits / embeddings / scores) that the
      common test differentiates, casts to bf16 and scales to extreme values.
    kwargs: keyword hyperparameters passed on every call.
    call: optional ``(fn, *args, **kwargs) -> per-example array`` for losses whose
      public call differs (returns state, needs a model, ...). Defaults to
      ``fn(*args, **kwargs)``.
    extreme_scale: magnitude the first argument is scaled to in the
      extreme-input test (1e4 for logits; embeddings that get normalized may use
      the same; ``None`` skips that check with a reason in ``skip_reason``).
    supports_where: whether the loss takes ``where=`` (everything per-example does).
    per_example: False for batch-level losses (AnyLoss, AUC over pairs, ...)
      whose output is a scalar for the batch; ``where`` then drops examples
      from the batch instead of zeroing outputs.
    check_grads_kwargs: overrides for ``jax.test_util.check_grads`` (eps, atol, rtol).
    min_batch: smallest batch for which the loss is defined (1 for per-example).
    skip_reason: why a generic check is skipped for this loss (documented, rare).
    labels: how the loss reads its integer arguments (every spec with one
      must say): ``"classes"`` (the first of ``label_args`` indexes classes
      ``[0, K)``: an out-of-range value raises when concrete and gives NaN
      for that example under jit) or ``"identities"`` (only equality
      matters: any integer, negative or huge, is valid).
    label_args: positions of the integer label arguments in ``make_args``
      (identities are relabelled together).
    nan_scope: ``"example"``: a NaN in one example's input makes that
      example's output NaN and leaves the others unchanged; ``"batch"``:
      every output depends on every example (ranks, normalizations,
      pairs), so all of them become NaN. A batch-level (``per_example=False``)
      output is a single NaN either way.
  """

  name: str
  make_args: Callable[..., tuple]
  kwargs: dict = dataclasses.field(default_factory=dict)
  call: Optional[Callable[..., Any]] = None
  extreme_scale: Optional[float] = 1e4
  supports_where: bool = True
  per_example: bool = True
  check_grads_kwargs: dict = dataclasses.field(default_factory=dict)
  min_batch: int = 1
  skip_reason: str = ""
  labels: Optional[str] = None
  label_args: tuple = (1,)
  nan_scope: str = "example"

  def __call__(self, fn, *args, **kwargs):
    kwargs = {**self.kwargs, **kwargs}
    if self.call is not None:
      return self.call(fn, *args, **kwargs)
    return fn(*args, **kwargs)


def default_dtype():
  return jnp.float32

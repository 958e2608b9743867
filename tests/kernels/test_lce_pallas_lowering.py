"""The Pallas kernels lower for real hardware, checked on the CPU.

``jax.export`` lowers a jitted loss + gradient for ``platforms=['cuda']`` and
``['tpu']`` without the device: every Pallas kernel goes through its
hardware lowering (``pallas_gpu`` to Triton IR, ``pallas_tpu`` to Mosaic TPU,
with its block-shape checks) instead of interpret mode. This caught
``pallas_gpu`` going to Mosaic GPU (jax's default GPU lowering since 0.8,
which stages whole blocks in shared memory) until Triton compiler params
were passed. Compiling the lowered kernels (PTX / TPU binaries) still needs
the hardware; the ``TestPallasGpu`` / ``TestPallasTpu`` classes do that.
"""

import re

import jax
import jax.numpy as jnp
import pytest
from jax import export

from diversity_jax.kernels import linear_cross_entropy

_TARGETS = {"pallas_gpu": ("cuda", "__gpu$xla.gpu.triton"),
            "pallas_tpu": ("tpu", "tpu_custom_call")}


def _custom_calls(impl, dtype, n=200, d=96, v=1000, **kw):
  platform, _ = _TARGETS[impl]
  spec = lambda *shape, dt=dtype: jax.ShapeDtypeStruct(shape, dt)

  def loss(x, w, b, y):
    return linear_cross_entropy(x, w, y, bias=b, implementation=impl, **kw)

  f = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))
  checks = [export.DisabledSafetyCheck.custom_call(t)
            for _, t in _TARGETS.values()]
  exported = export.export(f, platforms=[platform], disabled_checks=checks)(
      spec(n, d), spec(v, d), spec(v), spec(n, dt=jnp.int32))
  text = exported.mlir_module()
  return re.findall(r"custom_call @([\w$.]+)", text), text


@pytest.mark.parametrize("impl", list(_TARGETS))
@pytest.mark.parametrize("dtype, kw", [
    (jnp.bfloat16, {}),
    (jnp.float32, dict(softcap=30.0, log_partition_penalty=1e-4)),
    (jnp.bfloat16, dict(vocab_sorting=True, softcap=30.0)),
    (jnp.float32, dict(label_smoothing=0.1, filter_eps=None)),
], ids=["bf16", "f32-softcap-zloss", "bf16-sorting", "f32-smoothing"])
def test_kernels_lower_for_hardware(impl, dtype, kw):
  """Ragged N, D, V; forward, dX and dW kernels all become hardware calls."""
  calls, _ = _custom_calls(impl, dtype, **kw)
  assert calls == [_TARGETS[impl][1]] * 3, calls


@pytest.mark.parametrize("impl", list(_TARGETS))
def test_default_blocks_lower_for_hardware(impl):
  """An LM-like shape that uses the default block sizes unclamped."""
  calls, _ = _custom_calls(impl, jnp.bfloat16, n=2048, d=512, v=32768)
  assert calls == [_TARGETS[impl][1]] * 3, calls


def test_gpu_vocab_splits_lower_for_hardware(monkeypatch):
  """The (token block, vocab split) grids with squeezed partial outputs lower
  to Triton too (the CPU has no SM count, so splits are forced here)."""
  from diversity_jax.kernels.linear_cross_entropy import pallas_gpu
  monkeypatch.setattr(pallas_gpu, "vocab_splits",
                      lambda nt, nv, interpret: min(4, nv))
  calls, text = _custom_calls("pallas_gpu", jnp.bfloat16, vocab_sorting=True)
  assert calls == [_TARGETS["pallas_gpu"][1]] * 3, calls
  # Forward and dX launch 4 splits per token block; dW one program per
  # vocab block.
  assert re.findall(r"grid_y = (\d+)", text) == ["4", "4", "1"]

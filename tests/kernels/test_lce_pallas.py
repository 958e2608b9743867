"""Pallas kernels (``pallas_gpu``, ``pallas_tpu``): hardware classes and their
``interpret=True`` twins.

The twins run the kernel logic (tiling, padding, masks, filter, the three
kernels of each backend) on CPU with a reduced case list (interpret mode is
slow); the hardware classes run the full contract and skip themselves without
the matching accelerator.
"""

import jax
import pytest

import lce_common as C
import lce_contract
from diversity_jax.kernels.linear_cross_entropy import pallas_gpu

INTERPRET_CASES = [("all", "mean"), ("all", "none")]


def pytest_generate_tests(metafunc):
  if "case" in metafunc.fixturenames:
    metafunc.parametrize("case", metafunc.cls.CASES,
                         ids=["-".join(c) for c in metafunc.cls.CASES])


class TestPallasGpuInterpret(lce_contract.LceContract):
  IMPL = "pallas_gpu"
  OPTIONS = {"interpret": True, "block_tokens": 16, "block_vocab": 16,
             "block_dim": 16}
  CASES = INTERPRET_CASES


class TestPallasTpuInterpret(lce_contract.LceContract):
  IMPL = "pallas_tpu"
  # Minimum Mosaic tiles (8 rows, 128 classes): V=53 pads to one vocab block,
  # N=37 to five token blocks.
  OPTIONS = {"interpret": True, "block_tokens": 8, "block_vocab": 128}
  CASES = INTERPRET_CASES


@pytest.mark.gpu
@pytest.mark.skipif(not C.has_platform("gpu"), reason="needs a GPU")
class TestPallasGpu(lce_contract.LceContract):
  IMPL = "pallas_gpu"
  OPTIONS = {"block_tokens": 16, "block_vocab": 16, "block_dim": 16}


@pytest.mark.tpu
@pytest.mark.skipif(not C.has_platform("tpu"), reason="needs a TPU")
class TestPallasTpu(lce_contract.LceContract):
  IMPL = "pallas_tpu"
  OPTIONS = {"block_tokens": 8, "block_vocab": 128}


@pytest.mark.parametrize("splits, sort", [(2, False), (3, False), (3, True),
                                          (5, True)])
def test_gpu_vocab_splits_interpret(monkeypatch, splits, sort):
  """Forward and ``dX`` over ``(token block, vocab split)`` grids: partial
  LSEs merged and partial ``dX`` summed outside the kernel. V=53 in blocks of
  16 pads to 96 classes for 3 splits (the last split sees padding only) and
  to 64 for 4 (5 asked, one per vocab block at most)."""
  seen = []

  def forced(num_token_blocks, num_vocab_blocks, interpret):
    seen.append(min(splits, num_vocab_blocks))
    return seen[-1]

  monkeypatch.setattr(pallas_gpu, "vocab_splits", forced)
  jax.clear_caches()         # no executable traced with other splits
  x, w, y, b, cw = C.make_inputs(37, 19, 53, seed=splits)
  kw = dict(bias=b, class_weights=cw, softcap=4.0,
            log_partition_penalty=1e-3, reduction="none")
  got = C.evaluate(x, w, y, implementation="pallas_gpu", interpret=True,
                   block_tokens=16, block_vocab=16, block_dim=16,
                   vocab_sorting=sort, **kw)
  assert seen and seen[0] == min(splits, 4) > 1
  want = C.numpy_evaluate(x, w, y, **kw)
  C.assert_tree_close(got, want, rtol=2e-5, atol=2e-5)


def test_vocab_splits_heuristic(monkeypatch):
  """About two programs per SM: an H100 (132 SMs) at N=4096 in token blocks
  of 64 gets 5 splits; capped at 8 and at the vocab blocks; 1 in interpret
  mode and on devices without an SM count (the CPU)."""
  assert pallas_gpu.vocab_splits(64, 512, interpret=False) == 1   # CPU here
  gpu = type("Gpu", (), {"core_count": 132})()
  monkeypatch.setattr(jax, "devices", lambda *a: [gpu])
  assert pallas_gpu.vocab_splits(64, 512, interpret=False) == 5
  assert pallas_gpu.vocab_splits(128, 512, interpret=False) == 3
  assert pallas_gpu.vocab_splits(8, 512, interpret=False) == 8
  assert pallas_gpu.vocab_splits(64, 2, interpret=False) == 2
  assert pallas_gpu.vocab_splits(512, 512, interpret=False) == 1
  assert pallas_gpu.vocab_splits(64, 512, interpret=True) == 1


def test_tpu_default_blocks_fit_vmem():
  """Default Mosaic TPU blocks stay within the VMEM budget as D grows
  (full-D blocks): unchanged at D=1024, shrunk at Gemma's D=2304 (256 x 512
  would need ~18 MiB in bf16), still multiples of (8, 128)."""
  from diversity_jax.kernels.linear_cross_entropy import pallas_tpu as T
  assert T.fit_vmem(256, 512, 1024, 2) == (256, 512)
  assert T.vmem_bytes(256, 512, 2304, 2) > T.VMEM_BUDGET
  for dp, itemsize in ((2304, 2), (2304, 4), (4096, 2)):
    bt, bv = T.fit_vmem(256, 512, dp, itemsize)
    assert T.vmem_bytes(bt, bv, dp, itemsize) <= T.VMEM_BUDGET, (dp, bt, bv)
    assert bt % 8 == 0 and bv % 128 == 0 and bt >= 64 and bv >= 128

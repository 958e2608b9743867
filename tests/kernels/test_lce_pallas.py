"""Pallas kernels (``pallas_gpu``, ``pallas_tpu``): hardware classes and their
``interpret=True`` twins.

The twins run the kernel logic (tiling, padding, masks, filter, the three
kernels of each backend) on CPU with a reduced case list (interpret mode is
slow); the hardware classes run the full contract and skip themselves without
the matching accelerator.
"""

import pytest

import lce_common as C
import lce_contract

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

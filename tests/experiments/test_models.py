"""Models: shapes, feature outputs, head naming, and DomainBed's parameter count."""

import jax
import jax.numpy as jnp
import pytest

from experiments import models


@pytest.mark.parametrize("name", [n for n in models.MODEL_NAMES
                                  if n.endswith("_tiny")])
def test_tiny_models_shapes_under_jit(name):
  model = models.get_model(name, num_classes=3)
  x = jnp.linspace(0, 1, 2 * 9 * 9 * 2).reshape(2, 9, 9, 2)  # odd side
  params = model.init(jax.random.key(0), x)["params"]
  assert "head" in params
  logits, feats = jax.jit(
      lambda p, x: model.apply({"params": p}, x, return_features=True))(
          params, x)
  assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  # features are the head's input: head(features) == logits.
  head = params["head"]
  assert jnp.allclose(feats @ head["kernel"] + head["bias"], logits,
                      atol=1e-5)
  if name in ("mlp_tiny", "vit_tiny"):  # bf16 inputs are computed in f32
    bf16 = model.apply({"params": params}, x.astype(jnp.bfloat16))
    assert bf16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(bf16)))


def test_mnist_cnn_matches_domainbed_parameter_count():
  # DomainBed networks.MNIST_CNN (28x28x1 input), counted by hand from
  # nn.Conv2d(1,64,3)+(64,128,3,s2)+(128,128,3)+(128,128,3), four
  # GroupNorm(8, C) affine layers, and the linear classifier 128 -> K:
  #   640 + 73856 + 147584 + 147584 + 2*(64+128+128+128) + (128*K + K).
  k = 10
  expected = 640 + 73856 + 147584 + 147584 + 896 + 128 * k + k
  model = models.get_model("mnist_cnn", num_classes=k)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 28, 28, 1)))
  assert sum(l.size for l in jax.tree.leaves(shapes)) == expected


def test_mnist_cnn_fast_is_half_width_and_downsamples_early():
  # Half of mnist_cnn's widths (32-64-64-64) and strides 2 on the first two
  # layers (28 -> 14 -> 7; mnist_cnn: 28 -> 14 at the second layer).
  x = jnp.zeros((1, 28, 28, 1))
  fast, full = (models.get_model(n, num_classes=10)
                for n in ("mnist_cnn_fast", "mnist_cnn"))
  shapes = jax.eval_shape(fast.init, jax.random.key(0), x)["params"]
  assert [shapes[f"conv{i}"]["kernel"].shape[-1] for i in range(4)] == [
      32, 64, 64, 64]
  flops = lambda m: jax.jit(lambda p, x: m.apply(p, x)).lower(
      m.init(jax.random.key(0), x), x).compile().cost_analysis()["flops"]
  assert flops(fast) < 0.25 * flops(full)


def test_unknown_model_names_choices():
  with pytest.raises(ValueError, match=r"config.model.*valid choices.*mlp"):
    models.get_model("nope", 2)

"""Tiny models, batches and a rule spec list shared by the transforms tests."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from diversity_jax import transforms

D_IN, HIDDEN, K = 3, 4, 3


def init_mlp(seed=0, dtype_head=jnp.float32):
  rng = np.random.default_rng(seed)
  return {
      "body": {"w": jnp.asarray(rng.normal(size=(D_IN, HIDDEN)) * 0.7,
                                jnp.float32),
               "b": jnp.asarray(rng.normal(size=(HIDDEN,)) * 0.1, jnp.float32)},
      "head": {"w": jnp.asarray(rng.normal(size=(HIDDEN, K)) * 0.7, dtype_head),
               "b": jnp.asarray(rng.normal(size=(K,)) * 0.1, jnp.float32)},
  }


def mlp_logits(params, x):
  h = jnp.tanh(x @ params["body"]["w"].astype(jnp.float32)
               + params["body"]["b"].astype(jnp.float32))
  return (h @ params["head"]["w"].astype(jnp.float32)
          + params["head"]["b"].astype(jnp.float32))


def ce_loss_fn(params, batch):
  """Classification loss following the protocol; any leading batch axes."""
  logits = mlp_logits(params, batch["x"])
  per = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
  return jnp.mean(per), {"logits": logits, "per_example_loss": per}


def make_batch(seed=0, n=8, domains=None):
  rng = np.random.default_rng(100 + seed)
  shape = (n,) if domains is None else (domains, n)
  x = jnp.asarray(rng.normal(size=shape + (D_IN,)), jnp.float32)
  y = jnp.asarray(rng.integers(0, K, size=shape), jnp.int32)
  index = jnp.arange(int(np.prod(shape)), dtype=jnp.int32).reshape(shape)
  return {"x": x, "y": y, "index": index}


# A realizable least-squares problem: logits = x W + b fits targets exactly.
def init_quadratic(bias_dtype=jnp.float32):
  return {"body": {"w": jnp.zeros((D_IN, K), jnp.float32)},
          "head": {"b": jnp.zeros((K,), bias_dtype)}}


QUAD_W = np.array([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0], [-0.7, 0.1, 0.5]],
                  np.float32)
QUAD_B = np.array([0.3, -0.2, 0.1], np.float32)


def quad_batch(domains=None, n=8):
  rng = np.random.default_rng(7)
  shape = (n,) if domains is None else (domains, n)
  x = rng.normal(size=shape + (D_IN,)).astype(np.float32)
  if domains is not None:
    x = np.broadcast_to(x[:1], x.shape).copy()   # identical domains
  t = x @ QUAD_W + QUAD_B
  return {"x": jnp.asarray(x), "y": jnp.zeros(shape, jnp.int32),
          "t": jnp.asarray(t),
          "index": jnp.arange(int(np.prod(shape)), dtype=jnp.int32).reshape(
              shape)}


def quad_loss_fn(params, batch):
  logits = (batch["x"] @ params["body"]["w"]
            + params["head"]["b"].astype(jnp.float32))
  per = 0.5 * jnp.sum(jnp.square(logits - batch["t"]), axis=-1)
  return jnp.mean(per), {"logits": logits, "per_example_loss": per}


def quad_scalar_loss_fn(params, batch):
  """``quad_loss_fn``'s loss alone, on a tuple batch ``(x, t)``."""
  x, t = batch
  logits = x @ params["body"]["w"] + params["head"]["b"].astype(jnp.float32)
  return jnp.mean(0.5 * jnp.sum(jnp.square(logits - t), axis=-1))


@dataclasses.dataclass(frozen=True)
class RuleSpec:
  name: str                         # public factory name
  make: Callable[[], Any]           # () -> GradientTransformationExtraArgs
  domains: bool = False             # batch has a leading domain axis
  converge_tol: float = 0.05        # final/initial loss ratio on the quadratic
  needs_aux: Optional[str] = None   # the aux key the rule reads, if any


N_TRAIN = 64
RULE_SPECS = [
    RuleSpec("sam", lambda: transforms.sam(0.05)),
    RuleSpec("sam", lambda: transforms.sam(0.05, adaptive=True)),
    RuleSpec("sam", lambda: transforms.sam(0.05, adaptive=True,
                                           adaptive_mask="weights")),
    RuleSpec("gsam", lambda: transforms.gsam(
        optax.linear_schedule(0.2, 0.02, 150), lr_max=0.2, lr_min=0.02,
        rho_max=0.05, rho_min=0.01, alpha=0.3)),
    RuleSpec("gsam", lambda: transforms.gsam(
        0.1, rho_max=0.05, alpha=0.5, adaptive=True, eta=0.01,
        minimize_fp=False)),
    RuleSpec("every_k_steps",
             lambda: transforms.every_k_steps(transforms.sam(0.05), 3)),
    RuleSpec("every_k_steps", lambda: transforms.every_k_steps(
        transforms.gsam(optax.linear_schedule(0.2, 0.02, 150), lr_max=0.2,
                        lr_min=0.02, rho_max=0.05, rho_min=0.01, alpha=0.3),
        2, between="gradient")),
    RuleSpec("gradient_norm_penalty",
             lambda: transforms.gradient_norm_penalty(0.05)),
    RuleSpec("gradient_norm_penalty",
             lambda: transforms.gradient_norm_penalty(
                 0.05, method="finite_difference", r=0.05)),
    RuleSpec("saf", lambda: transforms.saf(N_TRAIN, K, steps_per_epoch=2,
                                           lag=1, start_epoch=0),
             needs_aux="logits"),
    RuleSpec("mesa", lambda: transforms.mesa(steps_per_epoch=2, decay=0.9,
                                             start_epoch=0),
             needs_aux="logits"),
    RuleSpec("hessian_alignment",
             lambda: transforms.hessian_alignment("hgp", head="head"),
             domains=True),
    RuleSpec("hessian_alignment",
             lambda: transforms.hessian_alignment("hutchinson", head="head",
                                                  num_probes=2),
             domains=True),
    RuleSpec("udim", lambda: transforms.udim(0.05, head="head",
                                             input_rho=0.01),
             converge_tol=0.1, needs_aux="per_example_loss"),
]

# Public names that are not rules, each tested in the named file.
OTHER_PUBLIC = {
    "EveryKStepsState": "test_common.py",
    "GSAMState": "test_common.py",
    "GradientNormPenaltyState": "test_common.py (state round trip)",
    "HessianAlignmentState": "test_common.py",
    "MESAState": "test_common.py",
    "SAFState": "test_common.py",
    "SAMState": "test_common.py",
    "UDIMState": "test_common.py",
    "coral_penalty": "test_dg_penalties.py",
    "fishr_penalty": "test_dg_penalties.py",
    "fishr_penalty_from_variances": "test_dg_penalties.py",
    "fishr_variances": "test_dg_penalties.py",
    "irm_penalty": "test_dg_penalties.py",
    "vrex_penalty": "test_dg_penalties.py",
    "hessian_vector_product": "test_exactness.py",
    "hutchinson_diagonal": "test_exactness.py",
    "trajectory_kl": "test_exactness.py",
    "udim_inconsistency": "test_exactness.py",
}


def make_step(tx, loss_fn, counter=None):
  """The protocol's train step, jitted; ``counter`` counts traces."""
  def step(params, opt_state, batch, key):
    if counter is not None:
      counter.append(1)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params, loss_fn=loss_fn,
                                   batch=batch, key=key)
    return optax.apply_updates(params, updates), opt_state, loss
  return jax.jit(step)


def flat(tree):
  return np.concatenate([np.zeros(0)] + [
      np.ravel(np.asarray(l, np.float64))
      for l in jax.tree_util.tree_leaves(tree)])

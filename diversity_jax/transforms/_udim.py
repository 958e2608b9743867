"""UDIM: Unknown Domain Inconsistency Minimization (Shin et al., ICLR 2024)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.transforms import _common


class UDIMState(NamedTuple):
  """State of :func:`udim` (arrays only).

  Attributes:
    inconsistency: the inconsistency penalty of the last step.
    perturbed_loss: ``L(w + e)`` of the SAM part at the last step.
  """
  inconsistency: jax.Array
  perturbed_loss: jax.Array


def _normalize(s, mode):
  """``F.normalize(s, p=2, eps=1e-12)`` per instance or over the batch axis."""
  s = jnp.asarray(s, jnp.float32)
  if mode == "instance":
    axes = tuple(range(1, s.ndim))
  else:  # "batch_axis": the authors' F.normalize(grad, dim=0)
    axes = (0,)
  norm = jnp.sqrt(jnp.sum(jnp.square(s), axis=axes, keepdims=True))
  return s / jnp.maximum(norm, 1e-12)


def udim_inconsistency(per_example_head_grads_clean,
                       per_example_head_grads_perturbed):
  r"""UDIM's inconsistency penalty from per-example head gradients.

  With ``G`` the clean and ``G~`` the perturbed per-example gradients
  (leaves ``(B, ...)``), exactly as the authors' ``IADA_FINAL``
  (``_get_grads_var``, ``_compute_distance_grads_var``, ``_grads_norm_syn``)::

    m     = mean_b G_b
    v     = mean_b (G_b - m)^2,   v~ = mean_b (G~_b - m)^2   (both centred
                                                              on the clean m)
    v_bar = (v + v~) / 2
    fishr = ( mean_p (v - v_bar)^2 + mean_p (v~ - v_bar)^2 ) / 2
    norm  = sum_leaf mean_b ||G~_b,leaf||^2 / numel(leaf)
    penalty = fishr + norm

  (``mean_p`` runs over all head coordinates; ``norm`` is the mean squared
  per-example gradient norm on the perturbed half, per leaf divided by its
  size, as backpack's ``BatchL2Grad`` in ``_grads_norm_syn``.)

  Args:
    per_example_head_grads_clean: pytree of ``(B, ...)`` gradients.
    per_example_head_grads_perturbed: same structure, perturbed inputs.

  Returns:
    Scalar penalty (f32).

  Example:
    >>> import jax.numpy as jnp
    >>> p = udim_inconsistency({'w': jnp.ones((4, 3))}, {'w': jnp.ones((4, 3))})

  References:
    Shin, Bae, Na, Kim and Moon, `Unknown Domain Inconsistency Minimization
    for Domain Generalization <https://arxiv.org/abs/2403.07329>`_, ICLR
    2024, Eq. 11 of arXiv:2403.07329 (the inconsistency term). The formula
    above is the authors' implementation, checked line by line
    (aailabkaist/UDIM = SJShin-AI/UDIM,
    ``UDIM_main/domainbed/iada/iada_final.py``, ``IADA_FINAL``).
  """
  gc = [jnp.asarray(g, jnp.float32)
        for g in jax.tree_util.tree_leaves(per_example_head_grads_clean)]
  gs = [jnp.asarray(g, jnp.float32)
        for g in jax.tree_util.tree_leaves(per_example_head_grads_perturbed)]
  vc, vs, norm = [], [], 0.0
  for a, b in zip(gc, gs):
    a = jnp.reshape(a, (a.shape[0], -1))
    b = jnp.reshape(b, (b.shape[0], -1))
    m = jnp.mean(a, axis=0, keepdims=True)
    vc.append(jnp.mean(jnp.square(a - m), axis=0))
    vs.append(jnp.mean(jnp.square(b - m), axis=0))
    norm = norm + jnp.mean(jnp.sum(jnp.square(b), axis=1)) / a.shape[1]
  vc = jnp.concatenate(vc)
  vs = jnp.concatenate(vs)
  vbar = (vc + vs) / 2
  fishr = (jnp.mean(jnp.square(vc - vbar)) + jnp.mean(jnp.square(vs - vbar))) / 2
  return fishr + norm


def udim(rho: float = 0.05, *, head, input_rho: float = 10.0,
         inconsistency_weight: float = 1.0,
         input_normalization: str = "batch_axis"
         ) -> optax.GradientTransformationExtraArgs:
  r"""Unknown Domain Inconsistency Minimization (UDIM) combined with SAM.

  One step, as the authors' ``IADA_FINAL.step`` (``w`` params, ``x``
  inputs, ``g = grads`` the clean gradient the trainer computed)::

    1. s   = grad_x [ L(w; x) + rho * ||grad_w L(w; x)|| ]   (Eq. 9)
       x~  = x + input_rho * normalize(s)                     (Eq. 10)
    2. e   = rho * g / ||g||;   g_sam = grad_w L(w + e; x)     (SAM)
    3. I   = udim_inconsistency(G(w; x), G(w; x~))            (Eq. 11)
       with G the per-example gradients of the head (``head``) on the
       concatenated batch [x; x~] at w (x~ held fixed)
    4. update = g_sam + inconsistency_weight * grad_w I

  ``input_normalization='batch_axis'`` (default) is the authors' code,
  ``F.normalize(grad, dim=0)``: every input coordinate is normalized across
  the batch, so an example's step length depends on the batch; their
  ``syn_lr = 10`` (the default ``input_rho``) was tuned with it.
  ``'instance'`` normalizes ``s`` per example (the per-instance ``rho_x``
  ball the paper describes); with it ``input_rho`` is each example's step
  length and should be retuned.

  Cost on the benchmark's MLP (``benchmarks/transforms.py``): 38 matmuls in
  the compiled step against 8 for a plain step (4.75x): step 1 is a forward,
  a backward and the double backward in ``x``; step 2 one forward +
  backward; step 3 a forward over 2B examples, the per-example head
  gradients and their backward. The trainer's ``grads`` are reused as
  ``g``. The authors' step runs the same passes (their step 1 also
  back-propagates into ``w``, which is discarded; here only ``x`` is
  differentiated).

  Requires ``batch['x']`` (floating inputs) and ``aux['per_example_loss']``;
  the per-example head gradients call ``loss_fn`` on single-example batches
  (every ``batch`` leaf sliced to a leading axis of 1) under ``jax.vmap``.

  Args:
    rho: SAM radius (also the weight of the gradient-norm term of step 1, as
      the authors' ``rho_s = rho_t``; their constant schedule is 0.05).
    head: classifier-head selector (see :func:`hessian_alignment`).
    input_rho: input step size (authors' ``syn_lr``; 10 in their PACS
      scripts ``bash/udim_pacs_*.sh``).
    inconsistency_weight: weight of the penalty gradient (authors'
      ``worst_weight``; 1 in their PACS scripts).
    input_normalization: ``'batch_axis'`` (authors' code) or ``'instance'``.

  Returns:
    ``optax.GradientTransformationExtraArgs``; state :class:`UDIMState`.

  Example:
    >>> import optax
    >>> from diversity_jax import transforms
    >>> tx = optax.chain(transforms.udim(0.05, head='head'), optax.sgd(0.1))

  References:
    Shin, Bae, Na, Kim and Moon, `Unknown Domain Inconsistency Minimization
    for Domain Generalization <https://arxiv.org/abs/2403.07329>`_, ICLR
    2024, Eqs. 9-11 and Alg. 1, numbered as in arXiv:2403.07329. Every step
    above was
    checked line by line against the authors' code (aailabkaist/UDIM, the
    code of SJShin-AI/UDIM, ``UDIM_main/domainbed/iada/iada_final.py``:
    ``set_closure.get_grad``, ``perturb_instances``, ``sam_compute_grad``,
    ``inconsistency_compute_grad``, ``merge_grad``; defaults from
    ``algorithms.py`` and ``bash/``), and the update equals an independent
    PyTorch transcription of that step to ~1e-7 on the benchmark's MLP.
  """
  fn = "udim"
  checks.check_nonnegative(rho, "rho", fn)
  checks.check_nonnegative(input_rho, "input_rho", fn)
  checks.check_nonnegative(inconsistency_weight, "inconsistency_weight", fn)
  checks.check_choice(input_normalization, ("instance", "batch_axis"),
                      "input_normalization", fn)

  def init_fn(params):
    _common.head_mask(fn, params, head)
    z = jnp.zeros((), jnp.float32)
    return UDIMState(inconsistency=z, perturbed_loss=z)

  def update_fn(updates, state, params=None, *, loss_fn=None, batch=None,
                **extra):
    del state, extra
    _common.require_protocol(fn, params, loss_fn, batch)
    _common.check_grads_match(fn, updates, params)
    if not isinstance(batch, dict) or "x" not in batch:
      checks._fail(fn, "`batch['x']` (floating inputs) is required", KeyError)
    x = batch["x"]
    checks.check_floating(x, "batch['x']", fn)

    def loss_at(p, xx):
      return _common.call_loss(fn, loss_fn, p, {**batch, "x": xx})[0]

    # 1. Worst-case input perturbation (double backprop w.r.t. x).
    def input_objective(xx):
      gw = jax.grad(loss_at)(params, xx)
      return loss_at(params, xx) + rho * numerics.tree_l2_norm(gw)

    s = jax.grad(input_objective)(x)
    x_tilde = jax.lax.stop_gradient(
        (jnp.asarray(x, jnp.float32)
         + input_rho * _normalize(s, input_normalization)).astype(x.dtype))

    # 2. SAM gradient on the clean batch, reusing the trainer's gradient.
    g = _common.f32(updates)
    scale = numerics.safe_divide(jnp.asarray(rho, jnp.float32),
                                 numerics.tree_l2_norm(g))
    adv = _common.perturb(params, g, scale)
    adv_loss, g_sam = jax.value_and_grad(loss_at)(adv, x)

    # 3. Inconsistency of per-example head gradients on [x; x~].
    both = jax.tree_util.tree_map(lambda l: jnp.concatenate([l, l], 0), batch)
    both["x"] = jnp.concatenate([x, x_tilde], 0)
    nb = jnp.shape(x)[0]
    mask_leaves = jax.tree_util.tree_leaves(_common.head_mask(fn, params, head))

    def inconsistency(p):
      p_leaves, treedef = jax.tree_util.tree_flatten(p)
      h0 = [l for l, m in zip(p_leaves, mask_leaves) if m]

      def example_loss(h, example):
        it = iter(h)
        q = jax.tree_util.tree_unflatten(
            treedef, [next(it) if m else l for l, m in zip(p_leaves,
                                                           mask_leaves)])
        one = jax.tree_util.tree_map(lambda l: l[None], example)
        _, aux = _common.call_loss(fn, loss_fn, q, one)
        per = _common.get_aux(fn, aux, "per_example_loss")
        return jnp.sum(jnp.asarray(per, jnp.float32))

      # Per-example head gradients: vmap of grad over single-example
      # batches (O(B) work; a jacrev of the batch loss would be O(B^2)).
      per_ex = jax.vmap(jax.grad(example_loss), in_axes=(None, 0))(h0, both)
      clean = [j[:nb] for j in per_ex]
      pert = [j[nb:] for j in per_ex]
      return udim_inconsistency(clean, pert)

    inc, g_inc = jax.value_and_grad(inconsistency)(params)
    out = optax.tree.add_scale(_common.f32(g_sam), inconsistency_weight,
                               _common.f32(g_inc))
    new_state = UDIMState(inconsistency=inc, perturbed_loss=adv_loss)
    return optax.tree.cast_like(out, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)

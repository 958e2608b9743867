"""Each rule's update against a hand-written step (separate from the code)."""

import functools
import os

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import optax
import pytest

from diversity_jax import transforms
import transforms_testlib as tl

RTOL, ATOL = 1e-5, 1e-6


@functools.lru_cache(maxsize=None)
def _setup(domains=None, n=8):
  params = tl.init_mlp()
  batch = tl.make_batch(domains=domains, n=n)
  w, unravel = ravel_pytree(params)
  loss = lambda v: tl.ce_loss_fn(unravel(v), batch)[0]
  return params, batch, w, unravel, loss


def _apply(tx, params, batch, key=None, state=None, loss_fn=tl.ce_loss_fn):
  grads = jax.grad(lambda p: loss_fn(p, batch)[0])(params)
  state = tx.init(params) if state is None else state
  upd = jax.jit(lambda g, s, p, b, k: tx.update(g, s, p, loss_fn=loss_fn,
                                                batch=b, key=k))
  return upd(grads, state, params, batch, key)


def _close(actual, expected, rtol=RTOL, atol=ATOL):
  np.testing.assert_allclose(tl.flat(actual), np.ravel(np.asarray(expected)),
                             rtol=rtol, atol=atol)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_equals_two_step_computation(adaptive):
  params, batch, w, _, loss = _setup()
  rho, eta = 0.1, 0.01
  u, state = _apply(transforms.sam(rho, adaptive=adaptive, eta=eta), params,
                    batch)
  g = np.asarray(jax.grad(loss)(w), np.float64)
  wn = np.asarray(w, np.float64)
  t = np.abs(wn) + eta if adaptive else np.ones_like(wn)
  e = rho * t * t * g / np.linalg.norm(t * g)
  expected = jax.grad(loss)(jnp.asarray(wn + e, jnp.float32))
  _close(u, expected)
  sharp = float(loss(jnp.asarray(wn + e, jnp.float32)) - loss(w))
  np.testing.assert_allclose(float(state.sharpness), sharp, rtol=1e-4,
                             atol=1e-6)


def test_sam_zero_gradient_is_finite_and_zero_rho_is_identity():
  params, batch, w, _, loss = _setup()
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  tx = transforms.sam(0.05)
  upd = jax.jit(lambda g: tx.update(g, tx.init(params), params,
                                    loss_fn=tl.ce_loss_fn, batch=batch)[0])
  out = upd(zero)                 # e = 0 -> gradient at w, finite
  _close(out, jax.grad(loss)(w))
  u, _ = _apply(transforms.sam(0.0), params, batch)
  _close(u, jax.grad(loss)(w))


def _authors_asam_perturbation(params, grads, rho, eta):
  """SamsungLabs/ASAM ``ASAM.ascent_step`` restated in NumPy: T_w = |w| + eta
  on parameters named like a weight (here ``'w'``), T = 1 on biases; every
  parameter moves by ``rho * T * (T g) / ||T g||``."""
  names, tg, t = [], {}, {}
  for module in params:
    for name in params[module]:
      w = np.asarray(params[module][name], np.float64)
      g = np.asarray(grads[module][name], np.float64)
      t[module, name] = np.abs(w) + eta if name == "w" else np.ones_like(w)
      tg[module, name] = t[module, name] * g
      names.append((module, name))
  norm = np.sqrt(sum(np.sum(tg[k] ** 2) for k in names))
  return {m: {n: np.asarray(params[m][n], np.float64)
              + rho * t[m, n] * tg[m, n] / norm for n in params[m]}
          for m in params}


@pytest.mark.parametrize("mask", ["weights", "callable", "pytree"])
def test_asam_weights_mask_matches_authors_rule(mask):
  params, batch, _, _, _ = _setup()
  rho, eta = 0.5, 0.01
  selection = {m: {"w": True, "b": False} for m in params}
  adaptive_mask = {"weights": "weights", "pytree": selection,
                   "callable": lambda p: selection}[mask]
  u, state = _apply(transforms.sam(rho, adaptive=True, eta=eta,
                                   adaptive_mask=adaptive_mask), params, batch)
  loss = lambda p: tl.ce_loss_fn(p, batch)[0]
  grads = jax.grad(loss)(params)
  adv = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32),
                               _authors_asam_perturbation(params, grads, rho,
                                                          eta))
  _close(u, ravel_pytree(jax.grad(loss)(adv))[0])
  np.testing.assert_allclose(float(state.sharpness),
                             float(loss(adv) - loss(params)), rtol=1e-4,
                             atol=1e-6)
  # Biases are what tell the masks apart: T_w on every leaf differs.
  u_all, _ = _apply(transforms.sam(rho, adaptive=True, eta=eta), params,
                    batch)
  assert not np.allclose(tl.flat(u), tl.flat(u_all), rtol=1e-4, atol=1e-5)


def test_asam_weights_mask_names():
  """'weights' leaves out Flax/Equinox 'bias' and Haiku 'b' leaves only."""
  rng = np.random.default_rng(0)
  normal = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  params = {"Dense_0": {"kernel": normal(2, 3), "bias": normal(3)},
            "BatchNorm_0": {"scale": normal(3), "bias": normal(3)},
            "linear": {"w": normal(3, 2), "b": normal(2)},
            "Embed_0": {"embedding": normal(2, 2)}}
  expected = {"Dense_0": {"kernel": True, "bias": False},
              "BatchNorm_0": {"scale": True, "bias": False},
              "linear": {"w": True, "b": False},
              "Embed_0": {"embedding": True}}
  x = normal(4, 2)

  def loss_fn(p, x):
    h = jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    h = h * p["BatchNorm_0"]["scale"] + p["BatchNorm_0"]["bias"]
    out = h @ p["linear"]["w"] + p["linear"]["b"]
    return jnp.mean(out ** 2) + jnp.sum(jnp.tanh(p["Embed_0"]["embedding"]))

  def update(mask):
    tx = transforms.sam(0.5, adaptive=True, adaptive_mask=mask)
    g = jax.grad(loss_fn)(params, x)
    return tl.flat(jax.jit(lambda g: tx.update(g, tx.init(params), params,
                                               loss_fn=loss_fn, batch=x)[0])(g))

  np.testing.assert_array_equal(update("weights"), update(expected))
  assert not np.allclose(update("weights"), update(None))


def test_sam_matches_optax_contrib_sam():
  """Three SAM steps with momentum: ``chain(sam, sgd)`` equals
  ``optax.contrib.sam`` (two ``update`` calls per SAM step)."""
  params, batch, _, _, _ = _setup()
  rho, lr = 0.05, 0.1
  loss = lambda p: tl.ce_loss_fn(p, batch)[0]
  tx = optax.chain(transforms.sam(rho), optax.sgd(lr, momentum=0.9))
  contrib = optax.contrib.sam(
      optax.sgd(lr, momentum=0.9),
      optax.chain(optax.contrib.normalize(), optax.sgd(rho)))
  ours_step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p,
                                             loss_fn=tl.ce_loss_fn,
                                             batch=batch))
  contrib_step = jax.jit(lambda p, s: contrib.update(jax.grad(loss)(p), s, p))
  p1, s1 = params, tx.init(params)
  p2, s2 = params, contrib.init(params)
  for _ in range(3):
    u, s1 = ours_step(p1, s1)
    p1 = optax.apply_updates(p1, u)
    for _ in range(2):
      u, s2 = contrib_step(p2, s2)
      p2 = optax.apply_updates(p2, u)
  assert not np.allclose(tl.flat(p1), tl.flat(params))
  _close(p1, tl.flat(p2))


@pytest.mark.parametrize("squared", [False, True])
def test_gradient_norm_penalty_exact_equals_explicit_hessian(squared):
  params, batch, w, _, loss = _setup()
  lam = 0.3
  u, state = _apply(transforms.gradient_norm_penalty(lam, squared=squared),
                    params, batch)
  g = np.asarray(jax.grad(loss)(w), np.float64)
  h = np.asarray(jax.jit(jax.hessian(loss))(w), np.float64)
  if squared:
    expected = g + 2 * lam * h @ g
  else:
    expected = g + lam * h @ g / np.linalg.norm(g)
  _close(u, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(state.grad_norm), np.linalg.norm(g),
                             rtol=1e-5)


def test_gradient_norm_penalty_finite_difference():
  params, batch, w, _, loss = _setup()
  lam, r = 0.02, 0.05
  u, _ = _apply(transforms.gradient_norm_penalty(
      lam, method="finite_difference", r=r), params, batch)
  g = np.asarray(jax.grad(loss)(w), np.float64)
  gp = np.asarray(jax.grad(loss)(jnp.asarray(
      np.asarray(w, np.float64) + r * g / np.linalg.norm(g), jnp.float32)))
  a = lam / r
  _close(u, (1 - a) * g + a * gp)
  # ... and approaches the exact update as r -> 0.
  u_fd, _ = _apply(transforms.gradient_norm_penalty(
      lam, method="finite_difference", r=1e-3), params, batch)
  u_ex, _ = _apply(transforms.gradient_norm_penalty(lam), params, batch)
  np.testing.assert_allclose(tl.flat(u_fd), tl.flat(u_ex), atol=2e-4)


def test_hessian_vector_product_equals_explicit_hessian():
  params, batch, w, unravel, loss = _setup()
  v = jnp.asarray(np.random.default_rng(1).normal(size=w.shape), jnp.float32)
  g, hv = jax.jit(transforms.hessian_vector_product, static_argnums=0)(
      loss, w, v)
  h = np.asarray(jax.jit(jax.hessian(loss))(w), np.float64)
  np.testing.assert_allclose(np.asarray(hv), h @ np.asarray(v), rtol=1e-5,
                             atol=1e-6)
  # Pytree form.
  f = lambda p: tl.ce_loss_fn(p, batch)[0]
  _, hv_tree = transforms.hessian_vector_product(f, params, unravel(v))
  np.testing.assert_allclose(tl.flat(hv_tree), h @ np.asarray(v), rtol=1e-5,
                             atol=1e-6)


def test_hutchinson_converges_to_true_diagonal():
  _, _, w, _, loss = _setup()
  true = np.diag(np.asarray(jax.jit(jax.hessian(loss))(w), np.float64))
  est = jax.jit(transforms.hutchinson_diagonal, static_argnums=(0, 3))
  errs = [np.linalg.norm(np.asarray(est(loss, w, jax.random.key(3), s))
                         - true) for s in (4, 1024)]
  assert errs[1] < 0.25 * errs[0], errs
  assert errs[1] < 0.2 * np.linalg.norm(true), errs
  # A diagonal Hessian is recovered exactly from one probe.
  c = jnp.arange(1.0, 5.0)
  d = transforms.hutchinson_diagonal(lambda v: jnp.sum(c * v ** 2),
                                     jnp.ones(4), jax.random.key(0), 1)
  np.testing.assert_allclose(np.asarray(d), 2 * np.asarray(c), rtol=1e-6)


def _explicit_alignment_penalty(params, batch, hw, gw, mode):
  """Penalty with explicit per-domain head Hessians (Hemati Eqs. 12/14)."""
  head, hunravel = ravel_pytree(params["head"])

  def risk(p, h, b):
    q = {"body": p["body"], "head": hunravel(h)}
    return tl.ce_loss_fn(q, b)[0]

  def pen(p):
    h = ravel_pytree(p["head"])[0]
    e = batch["x"].shape[0]
    doms = [jax.tree_util.tree_map(lambda l: l[i], batch) for i in range(e)]
    gs = [jax.grad(risk, 1)(p, h, b) for b in doms]
    hs = [jax.hessian(risk, 1)(p, h, b) for b in doms]
    gbar = jax.lax.stop_gradient(sum(gs) / e)
    hbar = jax.lax.stop_gradient(sum(hs) / e)
    if mode == "hgp":
      a = [hh @ gg for hh, gg in zip(hs, gs)]
      abar = hbar @ gbar
    else:
      a = [jnp.diag(hh) for hh in hs]
      abar = jnp.diag(hbar)
    hp = sum(jnp.sum((ai - abar) ** 2) for ai in a) / e
    gp = sum(jnp.sum((gi - gbar) ** 2) for gi in gs) / e
    return hw * hp + gw * gp, (hp, gp)

  return pen


def test_hgp_equals_explicit_hessian_computation():
  params, batch, _, _, _ = _setup(domains=2, n=4)
  hw, gw = 0.7, 0.3
  u, state = _apply(transforms.hessian_alignment(
      "hgp", head="head", hessian_weight=hw, grad_weight=gw), params, batch)
  pen = _explicit_alignment_penalty(params, batch, hw, gw, "hgp")
  (total, (hp, gp)), pgrad = jax.jit(jax.value_and_grad(pen, has_aux=True))(
      params)
  grads = jax.grad(lambda p: tl.ce_loss_fn(p, batch)[0])(params)
  expected = jax.tree_util.tree_map(jnp.add, grads, pgrad)
  _close(u, tl.flat(expected), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(state.penalty), float(total), rtol=1e-5)
  np.testing.assert_allclose(float(state.grad_penalty), float(gp), rtol=1e-5)


def test_hutchinson_alignment_penalty_approaches_explicit_diagonal():
  params, batch, _, _, _ = _setup(domains=2, n=4)
  pen = _explicit_alignment_penalty(params, batch, 1.0, 1.0, "hutchinson")
  _, (hp, gp) = jax.jit(pen)(params)
  _, state = _apply(transforms.hessian_alignment(
      "hutchinson", head="head", num_probes=4096), params, batch,
      key=jax.random.key(0))
  np.testing.assert_allclose(float(state.grad_penalty), float(gp), rtol=1e-5)
  # The squared distance of noisy estimates is biased upward by O(1/S).
  assert 0.95 * float(hp) <= float(state.hessian_penalty) <= 1.25 * float(hp)
  with pytest.raises(TypeError, match="key"):
    _apply(transforms.hessian_alignment("hutchinson", head="head"), params,
           batch, key=None)


def _kl_reference(z, old, temperature):
  """T^2 * mean_i sum_k q_ik (log q_ik - log p_ik) written out directly."""
  q = jax.nn.softmax(old / temperature, axis=-1)
  logp = z / temperature - jax.scipy.special.logsumexp(
      z / temperature, axis=-1, keepdims=True)
  return temperature ** 2 * jnp.mean(jnp.sum(q * (jnp.log(q) - logp), -1))


def test_trajectory_kl_matches_numpy():
  rng = np.random.default_rng(0)
  z, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  T = 3.0
  q = np.exp(t / T) / np.exp(t / T).sum(-1, keepdims=True)
  p = np.exp(z / T) / np.exp(z / T).sum(-1, keepdims=True)
  ref = T ** 2 * np.mean(np.sum(q * np.log(q / p), -1))
  got = jax.jit(transforms.trajectory_kl, static_argnums=2)(
      jnp.asarray(z, jnp.float32), jnp.asarray(t, jnp.float32), T)
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)
  big = transforms.trajectory_kl(jnp.full((2, 3), 1e4).at[:, 0].set(-1e4),
                                 jnp.zeros((2, 3)), 1.0)
  assert np.isfinite(float(big))


def test_saf_matches_per_step_equations():
  params0 = tl.init_mlp()
  batch = tl.make_batch(n=6)
  batch["index"] = jnp.array([5, 2, 7, 0, 9, 3], jnp.int32)
  lam, T = 0.5, 2.0
  tx = transforms.saf(10, tl.K, steps_per_epoch=1, lam=lam, temperature=T,
                      lag=1, start_epoch=0)
  loss = lambda p: tl.ce_loss_fn(p, batch)[0]
  # Step 0 (epoch 0): KL inactive, update = gradient, slot 0 <- outputs.
  u0, s1 = _apply(tx, params0, batch)
  _close(u0, tl.flat(jax.grad(loss)(params0)))
  z0 = tl.mlp_logits(params0, batch["x"])
  np.testing.assert_allclose(np.asarray(s1.logits_buffer)[np.asarray(
      batch["index"]), 0], np.asarray(z0), rtol=1e-6)
  assert float(np.abs(np.asarray(s1.logits_buffer)[[1, 4, 6, 8]]).max()) == 0
  # Step 1 (epoch 1): targets = outputs recorded one epoch earlier.
  params1 = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params0,
                                   jax.grad(loss)(params0))
  u1, s2 = _apply(tx, params1, batch, state=s1)
  total = lambda p: loss(p) + lam * _kl_reference(
      tl.mlp_logits(p, batch["x"]), z0, T)
  _close(u1, tl.flat(jax.jit(jax.grad(total))(params1)))
  np.testing.assert_allclose(float(s2.penalty), float(total(params1)
                                                      - loss(params1)),
                             rtol=1e-5)
  z1 = tl.mlp_logits(params1, batch["x"])
  buf = np.asarray(s2.logits_buffer)[np.asarray(batch["index"])]
  np.testing.assert_allclose(buf[:, 1], np.asarray(z1), rtol=1e-6)
  np.testing.assert_allclose(buf[:, 0], np.asarray(z0), rtol=1e-6)
  with pytest.raises(KeyError, match="index"):
    b = dict(batch)
    del b["index"]
    _apply(tx, params0, b)


def test_mesa_matches_per_step_equations():
  params0 = tl.init_mlp()
  batch = tl.make_batch(n=6)
  lam, T, decay = 0.4, 3.0, 0.5
  tx = transforms.mesa(steps_per_epoch=1, decay=decay, lam=lam,
                       temperature=T, start_epoch=0)
  loss = lambda p: tl.ce_loss_fn(p, batch)[0]
  u0, s1 = _apply(tx, params0, batch)
  _close(u0, tl.flat(jax.grad(loss)(params0)))
  params1 = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params0,
                                   jax.grad(loss)(params0))
  u1, s2 = _apply(tx, params1, batch, state=s1)
  # The authors' loop (MESA_train.py with timm ModelEmaV2): the EMA starts
  # as a copy of p0 and is updated after every optimizer step, so the
  # teacher of step 1 is decay * p0 + (1 - decay) * p1.
  ema = jax.tree_util.tree_map(lambda a, b: decay * a + (1 - decay) * b,
                               params0, params1)
  teacher = tl.mlp_logits(ema, batch["x"])
  total = lambda p: loss(p) + lam * _kl_reference(
      tl.mlp_logits(p, batch["x"]), teacher, T)
  _close(u1, tl.flat(jax.jit(jax.grad(total))(params1)))
  np.testing.assert_allclose(tl.flat(s2.ema_params), tl.flat(ema), rtol=1e-6)
  np.testing.assert_allclose(tl.flat(s1.ema_params), tl.flat(params0),
                             rtol=1e-6)


def _udim_reference(params, batch, rho, input_rho, weight, mode):
  """UDIM step written from the paper / authors' step, loops per example."""
  x, y = batch["x"], batch["y"]
  n = x.shape[0]

  def L(p, xx):
    return tl.ce_loss_fn(p, {**batch, "x": xx})[0]

  def obj(xx):
    gw = ravel_pytree(jax.grad(L)(params, xx))[0]
    return L(params, xx) + rho * jnp.sqrt(jnp.sum(gw ** 2))

  s = np.asarray(jax.jit(jax.grad(obj))(x), np.float64)
  if mode == "instance":
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
  else:
    s = s / np.linalg.norm(s, axis=0, keepdims=True)
  xt = jnp.asarray(np.asarray(x, np.float64) + input_rho * s, jnp.float32)

  w, unravel = ravel_pytree(params)
  g = jax.grad(lambda v: L(unravel(v), x))(w)
  e = rho * g / jnp.linalg.norm(g)
  g_sam = jax.grad(lambda v: L(unravel(v), x))(w + e)

  def ce_one(p, xi, yi):
    z = tl.mlp_logits(p, xi[None])[0]
    return jax.nn.logsumexp(z) - z[yi]

  def inc(v):
    p = unravel(v)

    def head_grad(xi, yi):
      gh = jax.grad(lambda h: ce_one({"body": p["body"], "head": h}, xi, yi))(
          p["head"])
      return [gh["b"].reshape(-1), gh["w"].reshape(-1)]   # leaf order b, w

    gc = [head_grad(x[i], y[i]) for i in range(n)]
    gt = [head_grad(xt[i], y[i]) for i in range(n)]
    vc, vt, norm = [], [], 0.0
    for leaf in range(2):
      a = jnp.stack([gc[i][leaf] for i in range(n)])
      b = jnp.stack([gt[i][leaf] for i in range(n)])
      m = a.mean(0)
      vc.append(((a - m) ** 2).mean(0))
      vt.append(((b - m) ** 2).mean(0))
      norm = norm + jnp.mean(jnp.sum(b ** 2, 1)) / a.shape[1]
    vc, vt = jnp.concatenate(vc), jnp.concatenate(vt)
    vb = (vc + vt) / 2
    return (jnp.mean((vc - vb) ** 2) + jnp.mean((vt - vb) ** 2)) / 2 + norm

  val, g_inc = jax.jit(jax.value_and_grad(inc))(w)
  return g_sam + weight * g_inc, val


# 'instance' is covered against the PyTorch golden step below (CPU budget).
@pytest.mark.parametrize("mode", ["batch_axis"])
def test_udim_matches_hand_written_step(mode):
  params = tl.init_mlp()
  batch = tl.make_batch(n=3)
  rho, input_rho, weight = 0.05, 0.5, 2.0
  u, state = _apply(transforms.udim(rho, head="head", input_rho=input_rho,
                                    inconsistency_weight=weight,
                                    input_normalization=mode), params, batch)
  expected, val = _udim_reference(params, batch, rho, input_rho, weight, mode)
  _close(u, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(state.inconsistency), float(val),
                             rtol=1e-5)


@pytest.mark.parametrize("mode", ["batch_axis", "instance"])
def test_udim_matches_torch_golden(mode):
  """Against a float64 PyTorch transcription of the authors' IADA_FINAL.step
  (tests/golden/make_udim_step.py)."""
  ref = np.load(os.path.join(os.path.dirname(__file__), os.pardir, "golden",
                             "udim_step.npz"))
  params = {"body": {"w": jnp.asarray(ref["body_w"]),
                     "b": jnp.asarray(ref["body_b"])},
            "head": {"w": jnp.asarray(ref["head_w"]),
                     "b": jnp.asarray(ref["head_b"])}}
  batch = {"x": jnp.asarray(ref["x"]), "y": jnp.asarray(ref["y"])}
  u, state = _apply(transforms.udim(0.05, head="head", input_rho=0.5,
                                    inconsistency_weight=2.0,
                                    input_normalization=mode), params, batch)
  for part in ("body", "head"):
    for leaf in ("w", "b"):
      np.testing.assert_allclose(
          np.asarray(u[part][leaf]), ref[f"{mode}_update_{part}_{leaf}"],
          rtol=2e-4, atol=1e-6, err_msg=f"{mode} {part}.{leaf}")
  np.testing.assert_allclose(float(state.inconsistency),
                             float(ref[f"{mode}_inconsistency"]), rtol=1e-5)


def test_udim_inconsistency_matches_numpy():
  rng = np.random.default_rng(0)
  a = {"u": rng.normal(size=(6, 2, 3)), "v": rng.normal(size=(6, 4))}
  b = {"u": rng.normal(size=(6, 2, 3)), "v": rng.normal(size=(6, 4))}
  vc, vt, norm = [], [], 0.0
  for k in ("u", "v"):
    ga, gb = a[k].reshape(6, -1), b[k].reshape(6, -1)
    m = ga.mean(0)
    vc.append(((ga - m) ** 2).mean(0))
    vt.append(((gb - m) ** 2).mean(0))
    norm += np.mean([np.sum(gb[i] ** 2) for i in range(6)]) / ga.shape[1]
  vc, vt = np.concatenate(vc), np.concatenate(vt)
  vb = (vc + vt) / 2
  ref = (np.mean((vc - vb) ** 2) + np.mean((vt - vb) ** 2)) / 2 + norm
  got = jax.jit(transforms.udim_inconsistency)(
      jax.tree_util.tree_map(lambda t: jnp.asarray(t, jnp.float32), a),
      jax.tree_util.tree_map(lambda t: jnp.asarray(t, jnp.float32), b))
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)


@pytest.mark.parametrize("make, match", [
    (lambda: transforms.sam(-1.0), "rho"),
    (lambda: transforms.sam(0.1, m_sharpness=True), "batch_axis_name"),
    (lambda: transforms.sam(0.1, adaptive_mask="weights"), "adaptive=True"),
    (lambda: transforms.sam(0.1, adaptive=True, adaptive_mask="biases"),
     "adaptive_mask"),
    (lambda: transforms.gradient_norm_penalty(0.1, method="bogus"), "method"),
    (lambda: transforms.gradient_norm_penalty(0.1, r=0.0), "`r`"),
    (lambda: transforms.saf(0, 3, steps_per_epoch=1), "num_examples"),
    (lambda: transforms.saf(10, 3, steps_per_epoch=0), "steps_per_epoch"),
    (lambda: transforms.mesa(steps_per_epoch=1, decay=1.0), "decay"),
    (lambda: transforms.hessian_alignment("x", head="head"), "method"),
    (lambda: transforms.hessian_alignment("hgp", head="head", num_probes=0),
     "num_probes"),
    (lambda: transforms.udim(0.05, head="head", input_normalization="x"),
     "input_normalization"),
])
def test_bad_hyperparameters_raise(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_bad_inputs_raise_at_trace_time():
  params, batch, _, _, _ = _setup()
  grads = jax.grad(lambda p: tl.ce_loss_fn(p, batch)[0])(params)
  tx = transforms.sam(0.05)
  bad = {"body": grads["body"], "head": {"w": grads["head"]["w"][:2],
                                         "b": grads["head"]["b"]}}
  with pytest.raises(ValueError, match="grads"):
    jax.jit(lambda g: tx.update(g, tx.init(params), params,
                                loss_fn=tl.ce_loss_fn, batch=batch))(bad)
  with pytest.raises(KeyError, match="head"):
    transforms.hessian_alignment("hgp", head="classifier").init(params)
  with pytest.raises(ValueError, match="adaptive_mask"):
    transforms.sam(0.1, adaptive=True,
                   adaptive_mask={"body": True}).init(params)
  saf = transforms.saf(4, tl.K, steps_per_epoch=1)
  b = dict(batch)
  b["index"] = jnp.arange(8, dtype=jnp.int32)         # ids >= num_examples
  with pytest.raises(ValueError, match="index"):
    saf.update(grads, saf.init(params), params, loss_fn=tl.ce_loss_fn,
               batch=b)
  with pytest.raises(TypeError, match="loss_fn.*length 3"):
    tx.update(grads, tx.init(params), params, batch=batch,
              loss_fn=lambda p, b: (*tl.ce_loss_fn(p, b), 0.0))
  with pytest.raises(ValueError, match="scalar loss"):
    tx.update(grads, tx.init(params), params, batch=batch,
              loss_fn=lambda p, b: tl.ce_loss_fn(p, b)[1]["per_example_loss"])

"""GSAM, every_k_steps (LookSAM / Composer) and the SAM family in bf16,
against NumPy statements of the authors' steps (float64, written separately
from the code)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diversity_jax import transforms
import transforms_testlib as tl

D, K, N = 3, 4, 8


# ----------------------------------------------------------------------------
# A linear softmax classifier, its loss and gradient in NumPy (float64).


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  params = {"w": rng.normal(size=(D, K)) * 0.5, "b": rng.normal(size=K) * 0.1}
  x = rng.normal(size=(N, D))
  y = rng.integers(0, K, size=N)
  return params, x, y


def _np_loss_grad(p, x, y):
  logits = x @ p["w"] + p["b"]
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  rows = np.arange(len(y))
  d = np.exp(logp)
  d[rows, y] -= 1.0
  d /= len(y)
  return -logp[rows, y].mean(), {"w": x.T @ d, "b": d.sum(0)}


def _jax_loss(p, batch):
  x, y = batch
  logits = x @ p["w"] + p["b"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _dot(a, b):
  return sum(float(np.sum(a[k] * b[k])) for k in a)


def _norm(a):
  return np.sqrt(_dot(a, a))


def _lin(*terms):
  """sum of coef * tree over (coef, tree) pairs."""
  return {k: sum(c * t[k] for c, t in terms) for k in terms[0][1]}


def _to_jax(p):
  return {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}


def _run(tx, params, x, y, steps):
  """``steps`` protocol steps under jit; the params and states after each."""
  batch = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32))

  @jax.jit
  def step(p, s):
    g = jax.grad(_jax_loss)(p, batch)
    u, s = tx.update(g, s, p, loss_fn=_jax_loss, batch=batch)
    return optax.apply_updates(p, u), s

  p, s = _to_jax(params), tx.init(_to_jax(params))
  out = []
  for _ in range(steps):
    p, s = step(p, s)
    out.append((p, s))
  return out


def _close_tree(actual, expected, rtol=2e-5, atol=2e-6):
  for k in expected:
    np.testing.assert_allclose(np.asarray(actual[k], np.float64), expected[k],
                               rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------
# GSAM against big_vision's gsam_gradient.


def _big_vision_gsam(p, x, y, *, rho_max, rho_min, alpha, lr, lr_max, lr_min,
                     minimize_fp, adaptive=False, eps=1e-12):
  """google-research/big_vision ``trainers/proj/gsam/gsam.py``
  ``gsam_gradient`` restated in NumPy; ``adaptive`` is the perturbation of
  the authors' PyTorch code (juntang-zhuang/GSAM ``perturb_weights``:
  ``rho w^2 g / ||w g||``). Returns (loss, gsam gradient, rho, L(w+e))."""
  loss, g = _np_loss_grad(p, x, y)
  if lr_max == lr_min:
    rho = rho_max
  else:
    rho = rho_min + (rho_max - rho_min) * (lr - lr_min) / (lr_max - lr_min)
  if adaptive:
    wg = {k: np.abs(p[k]) * g[k] for k in p}
    p_sam = {k: p[k] + rho * p[k] ** 2 * g[k] / (_norm(wg) + eps) for k in p}
  else:
    p_sam = {k: p[k] + rho * g[k] / (_norm(g) + eps) for k in p}
  loss_p, g_p = _np_loss_grad(p_sam, x, y)
  if minimize_fp:
    unit = {k: v / _norm(g_p) for k, v in g_p.items()}
    residual = _lin((1.0, g), (-_dot(unit, g), unit))
    out = _lin((1.0, g_p), (-alpha, residual))
  else:
    unit = {k: v / _norm(g) for k, v in g.items()}
    residual = _lin((1.0, g_p), (-_dot(unit, g_p), unit))
    out = _lin((1.0, g), (alpha, residual))
  return loss, out, rho, loss_p


@pytest.mark.parametrize("minimize_fp, adaptive", [(True, False),
                                                   (False, False),
                                                   (True, True)])
def test_gsam_matches_big_vision_over_steps_with_rho_schedule(minimize_fp,
                                                              adaptive):
  """Five GSAM + SGD steps on a linearly decaying learning rate: params,
  rho_t and the surrogate gap at every step equal the NumPy statement."""
  params, x, y = _problem()
  lr_max, lr_min, total = 0.5, 0.05, 4
  hp = dict(rho_max=0.3, rho_min=0.05, alpha=0.4, lr_max=lr_max,
            lr_min=lr_min, minimize_fp=minimize_fp)
  schedule = optax.linear_schedule(lr_max, lr_min, total)
  tx = optax.chain(transforms.gsam(schedule, adaptive=adaptive, eta=0.0,
                                   **hp), optax.sgd(schedule))
  got = _run(tx, params, x, y, steps=5)
  p = params
  for t in range(5):
    lr = lr_max + (lr_min - lr_max) * min(t, total) / total
    loss, u, rho, loss_p = _big_vision_gsam(p, x, y, lr=lr, adaptive=adaptive,
                                            **hp)
    p = _lin((1.0, p), (-lr, u))
    p_got, s_got = got[t]
    _close_tree(p_got, p)
    np.testing.assert_allclose(float(s_got[0].rho), rho, rtol=1e-6)
    np.testing.assert_allclose(float(s_got[0].sharpness), loss_p - loss,
                               rtol=1e-4, atol=1e-6)
    assert int(s_got[0].count) == t + 1
  assert float(got[-1][1][0].rho) == pytest.approx(0.05)   # rho_min at lr_min


def test_gsam_alpha_zero_constant_rho_is_sam_and_rho_clips_at_zero():
  params, x, y = _problem(1)
  got = _run(optax.chain(transforms.gsam(0.1, rho_max=0.2, alpha=0.0),
                         optax.sgd(0.1)), params, x, y, steps=3)
  ref = _run(optax.chain(transforms.sam(0.2), optax.sgd(0.1)), params, x, y,
             steps=3)
  _close_tree(got[-1][0], {k: np.asarray(v) for k, v in ref[-1][0].items()},
              rtol=1e-6, atol=1e-7)
  # A warmup below lr_min gives a negative formula value: rho_t = 0, and
  # then g_p = g has no orthogonal part: the update is the plain gradient.
  tx = transforms.gsam(lambda c: 0.0 * c, lr_max=1.0, lr_min=0.5,
                       rho_max=0.5, rho_min=0.1, alpha=0.5)
  p = _to_jax(params)
  batch = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32))
  g = jax.grad(_jax_loss)(p, batch)
  u, s = jax.jit(lambda g, s: tx.update(g, s, p, loss_fn=_jax_loss,
                                        batch=batch))(g, tx.init(p))
  assert float(s.rho) == 0.0
  _close_tree(u, {k: np.asarray(v) for k, v in g.items()}, rtol=1e-6,
              atol=1e-7)


# ----------------------------------------------------------------------------
# every_k_steps against LookSAM's Algorithm 1 and Composer's interval.


@pytest.mark.parametrize("between", ["looksam", "gradient"])
def test_every_k_steps_matches_looksam_and_composer_statements(between):
  """Seven steps with k = 3 and SGD (rule steps 0, 3, 6)."""
  params, x, y = _problem(2)
  rho, alpha, k, lr = 0.2, 0.7, 3, 0.3
  tx = optax.chain(transforms.every_k_steps(transforms.sam(rho), k,
                                            between=between, alpha=alpha),
                   optax.sgd(lr))
  got = _run(tx, params, x, y, steps=7)
  p, g_v = params, None
  for t in range(7):
    _, g = _np_loss_grad(p, x, y)
    if t % k == 0:
      _, g_s = _np_loss_grad({n: p[n] + rho * g[n] / _norm(g) for n in p},
                             x, y)
      cos = _dot(g, g_s) / (_norm(g) * _norm(g_s))
      g_v = _lin((1.0, g_s), (-_norm(g_s) * cos / _norm(g), g))
      u = g_s
    elif between == "looksam":
      u = _lin((1.0, g), (alpha * _norm(g) / _norm(g_v), g_v))
    else:
      u = g
    p = _lin((1.0, p), (-lr, u))
    _close_tree(got[t][0], p)
    assert int(got[t][1][0].step) == t + 1


def test_every_k_steps_with_k_one_is_the_rule():
  params, x, y = _problem(3)
  schedule = optax.linear_schedule(0.3, 0.03, 3)
  rules = [lambda: transforms.sam(0.1),
           lambda: transforms.sam(0.5, adaptive=True),
           lambda: transforms.gsam(schedule, lr_max=0.3, lr_min=0.03,
                                   rho_max=0.2, rho_min=0.02, alpha=0.5),
           lambda: transforms.gradient_norm_penalty(
               0.05, method="finite_difference", r=0.1)]
  for make in rules:
    got = _run(optax.chain(transforms.every_k_steps(make(), 1),
                           optax.sgd(schedule)), params, x, y, steps=3)
    ref = _run(optax.chain(make(), optax.sgd(schedule)), params, x, y,
               steps=3)
    for (p1, s1), (p2, s2) in zip(got, ref):
      np.testing.assert_allclose(tl.flat(p1), tl.flat(p2), rtol=1e-6,
                                 atol=1e-7)
      np.testing.assert_allclose(tl.flat(s1[0].inner), tl.flat(s2[0]),
                                 rtol=1e-6, atol=1e-7)


def test_every_k_steps_advances_gsam_schedule_and_skips_the_passes():
  """The rule's extra passes run only on its steps (cond runs one branch);
  GSAM's schedule counter still advances every step."""
  params, x, y = _problem(4)
  calls = []

  def counting_loss(p, batch):
    jax.debug.callback(lambda: calls.append(1))
    return _jax_loss(p, batch)

  schedule = optax.linear_schedule(0.3, 0.03, 6)
  k = 3
  tx = transforms.every_k_steps(
      transforms.gsam(schedule, lr_max=0.3, lr_min=0.03, rho_max=0.2,
                      rho_min=0.02, alpha=0.5), k)
  batch = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32))

  @jax.jit
  def step(p, s):
    g = jax.grad(counting_loss)(p, batch)
    return tx.update(g, s, p, loss_fn=counting_loss, batch=batch)

  p, s = _to_jax(params), tx.init(_to_jax(params))
  per_step = []
  for t in range(6):
    before = len(calls)
    _, s = step(p, s)
    jax.effects_barrier()
    per_step.append(len(calls) - before)
    assert int(s.inner.count) == t + 1
    lr = 0.3 + (0.03 - 0.3) * t / 6
    if t % k == 0:   # rho of the rule's step t
      np.testing.assert_allclose(
          float(s.inner.rho), 0.02 + 0.18 * (lr - 0.03) / 0.27, rtol=1e-5)
  # Between: the trainer's gradient and the wrapper's L(w) (its `value`);
  # rule steps add GSAM's gradient at w + e, and nothing else.
  assert per_step[1] == per_step[2] == per_step[4] == 2
  assert per_step[0] == per_step[3] == 3


# ----------------------------------------------------------------------------
# Mixed precision: bf16 params and gradients, f32 perturbation arithmetic.


def _bf16(a):
  """float64 -> f32 -> bf16 (the library rounds its f32 result to bf16)."""
  return np.asarray(jnp.asarray(np.asarray(a, np.float32), jnp.bfloat16))


def _f64(a):
  return np.asarray(a, np.float64)


def _sq_loss(p, batch):
  """0.5 ||w||^2 in f32: its gradient at the perturbed bf16 params is
  those params, so the update shows the perturbation the rule built."""
  del batch
  return 0.5 * sum(jnp.sum(jnp.square(l.astype(jnp.float32)))
                   for l in jax.tree_util.tree_leaves(p))


RHO, ALPHA, ETA, LAM, R = 0.05, 0.4, 0.01, 0.05, 0.1


def _ref_perturbed(w, g, rho=RHO, t=None):
  t = {k: np.ones_like(v) for k, v in w.items()} if t is None else t
  tg = {k: t[k] * g[k] for k in g}
  return {k: _f64(_bf16(w[k] + rho * t[k] * tg[k] / _norm(tg))) for k in w}


def _reference(name, w, g):
  if name == "sam":
    return _ref_perturbed(w, g)
  if name == "asam":
    return _ref_perturbed(w, g, t={k: np.abs(v) + ETA for k, v in w.items()})
  if name == "gsam":
    g_p = _ref_perturbed(w, g)
    unit = {k: v / _norm(g_p) for k, v in g_p.items()}
    return _lin((1.0, g_p), (-ALPHA, _lin((1.0, g), (-_dot(g, unit), unit))))
  if name == "gsam_fp_false":
    g_p = _ref_perturbed(w, g)
    unit = {k: v / _norm(g) for k, v in g.items()}
    return _lin((1.0, g), (ALPHA, _lin((1.0, g_p), (-_dot(g_p, unit),
                                                     unit))))
  if name == "gnp_fd":
    a = LAM / R
    return _lin((1.0 - a, g), (a, _ref_perturbed(w, g, rho=R)))
  if name == "gnp_exact":          # H = I; the tangent g/||g|| is bf16
    return _lin((1.0, g), (LAM, {k: _f64(_bf16(v / _norm(g)))
                                 for k, v in g.items()}))
  raise ValueError(name)


MIXED = {
    "sam": lambda: transforms.sam(RHO),
    "asam": lambda: transforms.sam(RHO, adaptive=True, eta=ETA),
    "gsam": lambda: transforms.gsam(0.1, rho_max=RHO, alpha=ALPHA),
    "gsam_fp_false": lambda: transforms.gsam(0.1, rho_max=RHO, alpha=ALPHA,
                                             minimize_fp=False),
    "gnp_fd": lambda: transforms.gradient_norm_penalty(
        LAM, method="finite_difference", r=R),
    "gnp_exact": lambda: transforms.gradient_norm_penalty(LAM),
}


def _mixed_inputs(scale, seed=0):
  rng = np.random.default_rng(seed)
  w = {"a": rng.normal(size=5), "b": rng.normal(size=(2, 3))}
  g = {k: rng.normal(size=np.shape(v)) * scale for k, v in w.items()}
  w = {k: _f64(_bf16(v)) for k, v in w.items()}    # exactly bf16 values
  g = {k: _f64(_bf16(v)) for k, v in g.items()}
  as_bf16 = lambda t: {k: jnp.asarray(v, jnp.bfloat16) for k, v in t.items()}
  return w, g, as_bf16(w), as_bf16(g)


def _assert_bf16_within_one_ulp(actual, expected):
  """Equal bf16 values, or adjacent ones (the f32 and float64 statements
  may round differently before the final rounding to bf16)."""
  for k in expected:
    a = np.asarray(actual[k])
    assert a.dtype == jnp.bfloat16, a.dtype
    e = _bf16(expected[k])
    bits = lambda v: np.asarray(v).view(np.int16).astype(np.int32)
    diff = np.abs(bits(a) - bits(e))
    assert np.all(diff <= 1), (k, a, e)
    assert np.mean(diff == 0) >= 0.5, (k, a, e)


def _update(tx, g, state, w):
  return jax.jit(lambda g, s, p: tx.update(g, s, p, loss_fn=_sq_loss,
                                           batch=()))(g, state, w)


@pytest.mark.parametrize("scale", [1e30, 1.0, 1e-30])
@pytest.mark.parametrize("name", sorted(MIXED))
def test_bf16_update_is_the_f32_computation_rounded_to_bf16(name, scale):
  """bf16 params and gradients of magnitude 1e30 / 1 / 1e-30 (whose f32
  sums of squares overflow / underflow): the update equals the float64
  statement rounded to bf16, and the gradient norm is finite and exact."""
  w, g, wb, gb = _mixed_inputs(scale)
  tx = MIXED[name]()
  u, state = _update(tx, gb, tx.init(wb), wb)
  _assert_bf16_within_one_ulp(u, _reference(name, w, g))
  norm = optax.tree_utils.tree_get(state, "grad_norm")
  if name != "asam":
    np.testing.assert_allclose(float(norm), _norm(g), rtol=1e-6)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_bf16_every_k_steps_reuse_step(scale):
  """LookSAM's reuse step in bf16: v from the SAM step (v / ||v|| stored in
  bf16), then ``g + alpha ||g|| / ||v|| v``."""
  w, g0, wb, g0b = _mixed_inputs(scale, seed=1)
  _, g1, _, g1b = _mixed_inputs(scale, seed=2)
  tx = transforms.every_k_steps(transforms.sam(RHO), 2, alpha=ALPHA)
  u0, s = _update(tx, g0b, tx.init(wb), wb)
  u1, s = _update(tx, g1b, s, wb)
  sam_u = _ref_perturbed(w, g0)
  _assert_bf16_within_one_ulp(u0, sam_u)
  v = _lin((1.0, sam_u), (-_dot(sam_u, g0) / _dot(g0, g0), g0))
  unit = {k: x / _norm(v) for k, x in v.items()}
  _assert_bf16_within_one_ulp(s.direction, unit)
  unit = {k: _f64(_bf16(x)) for k, x in unit.items()}   # stored in bf16
  _assert_bf16_within_one_ulp(
      u1, _lin((1.0, g1), (ALPHA * _norm(g1), unit)))


def _bf16_mlp_loss(p, batch):
  """tl.ce_loss_fn with bf16 activations (matmuls in the params' dtype)."""
  dt = p["body"]["w"].dtype
  h = jnp.tanh(batch["x"].astype(dt) @ p["body"]["w"] + p["body"]["b"])
  logits = (h @ p["head"]["w"] + p["head"]["b"]).astype(jnp.float32)
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["y"]).mean()


@pytest.mark.parametrize("make", [
    lambda: transforms.sam(0.1),
    lambda: transforms.sam(0.5, adaptive=True),
    lambda: transforms.gsam(0.1, rho_max=0.1, alpha=0.5),
    lambda: transforms.every_k_steps(transforms.sam(1.0), 2),
], ids=["sam", "asam", "gsam", "every_k_steps"])
def test_bf16_params_and_activations_track_the_f32_rule(make):
  """Three updates with bf16 params and a bf16 loss_fn stay within bf16
  rounding of the same updates in f32, in bf16 throughout. (LookSAM's ``v``
  is a difference of nearly parallel gradients: with rho = 0.1 here it is
  ~1% of them and bf16 rounding moves the reuse step by ~20%, hence rho =
  1 for it; see every_k_steps' docstring.)"""
  batch = tl.make_batch(n=16)
  p32 = tl.init_mlp()
  p16 = optax.tree.cast(p32, jnp.bfloat16)
  out = {}
  for name, params in (("f32", p32), ("bf16", p16)):
    tx = optax.chain(make(), optax.sgd(0.2))
    step = jax.jit(lambda p, s: tx.update(jax.grad(_bf16_mlp_loss)(p, batch),
                                          s, p, loss_fn=_bf16_mlp_loss,
                                          batch=batch))
    s, us = tx.init(params), []
    for _ in range(3):
      u, s = step(params, s)
      us.append(u)
    out[name] = us
  for u16, u32 in zip(out["bf16"], out["f32"]):
    assert all(l.dtype == jnp.bfloat16 for l in jax.tree_util.tree_leaves(u16))
    a, b = tl.flat(u16), tl.flat(u32)
    assert np.all(np.isfinite(a))
    assert np.linalg.norm(a - b) <= 0.03 * np.linalg.norm(b)


# ----------------------------------------------------------------------------
# Bad hyperparameters.


@pytest.mark.parametrize("make, error, match", [
    (lambda: transforms.gsam(optax.constant_schedule(0.1)), TypeError,
     "lr_max"),
    (lambda: transforms.gsam(lambda c: 0.1, lr_max=0.1), TypeError, "lr_min"),
    (lambda: transforms.gsam(lambda c: 0.1, lr_max=0.1, lr_min=0.2),
     ValueError, "lr_max"),
    (lambda: transforms.gsam(lambda c: 0.1, lr_max=0.1, lr_min=0.0,
                             rho_max=0.1, rho_min=0.2), ValueError,
     "rho_max"),
    (lambda: transforms.gsam(0.1, alpha=-1.0), ValueError, "alpha"),
    (lambda: transforms.gsam(0.1, m_sharpness=True), ValueError,
     "batch_axis_name"),
    (lambda: transforms.every_k_steps(transforms.sam(), 0), ValueError,
     "`k`"),
    (lambda: transforms.every_k_steps(transforms.sam(), 2.0), ValueError,
     "`k`"),
    (lambda: transforms.every_k_steps(transforms.sam(), 2, between="x"),
     ValueError, "between"),
    (lambda: transforms.every_k_steps(transforms.sam(), 2, alpha=-0.1),
     ValueError, "alpha"),
    (lambda: transforms.every_k_steps(lambda g: g, 2), TypeError, "rule"),
])
def test_bad_hyperparameters_raise_naming_them(make, error, match):
  with pytest.raises(error, match=match):
    make()


@pytest.mark.parametrize("make", [lambda: transforms.sam(0.1),
                                  lambda: transforms.gsam(0.1, rho_max=0.1)],
                         ids=["sam", "gsam"])
def test_value_extra_argument_replaces_the_forward_at_w(make):
  params, x, y = _problem(5)
  p = _to_jax(params)
  batch = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32))
  loss, g = jax.value_and_grad(_jax_loss)(p, batch)
  tx = make()
  upd = lambda **kw: tx.update(g, tx.init(p), p, loss_fn=_jax_loss,
                               batch=batch, **kw)
  u1, s1 = upd()
  u2, s2 = upd(value=loss)
  np.testing.assert_array_equal(tl.flat(u1), tl.flat(u2))
  np.testing.assert_allclose(float(s2.sharpness), float(s1.sharpness),
                             rtol=1e-6, atol=1e-8)
  u3, s3 = upd(value=loss + 1.0)         # the passed value is what is used
  np.testing.assert_allclose(float(s3.sharpness), float(s1.sharpness) - 1.0,
                             rtol=1e-5)
  with pytest.raises(ValueError, match="`value`"):
    upd(value=jnp.ones(2))

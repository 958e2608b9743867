"""The language-model program: model, head, mesh step, program, CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import lm as lm_config
from experiments import config_validation
from experiments.lm import baseline
from experiments.lm import head as head_lib
from experiments.lm import program
from experiments.lm import selection as selection_lib
from experiments.lm import step as step_lib
from experiments.lm import validation
from experiments.models import transformer
from diversity_jax.selection import UDSMemory
from diversity_jax.selection import uds_select

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
V, D = 64, 16


def _tiny(tie=True, **kw):
  return transformer.DecoderLM(vocab_size=V, dim=D, depth=1, heads=2,
                               tie_embeddings=tie, **kw)


def _tokens(b=8, t=9, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, V, (b, t))
  tokens[-1, t // 2:] = 0          # a padded row end
  return jnp.asarray(tokens, jnp.int32)


def _max_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))),
      a, b)))


def test_rotary_is_a_rotation_by_position():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, 5, 1, 8)).astype(np.float32)
  got = np.asarray(transformer.rotary(jnp.asarray(x)))
  # Brute force: pairs (i, i + 4) as complex numbers times e^{j t theta_i}.
  theta = 10000.0 ** (-np.arange(4) / 4)
  z = x[..., :4] + 1j * x[..., 4:]
  z = z * np.exp(1j * np.arange(5)[None, :, None, None] * theta)
  np.testing.assert_allclose(got, np.concatenate([z.real, z.imag], -1),
                             rtol=1e-5, atol=1e-5)
  # Relative positions: <R_s q, R_t k> depends on t - s only.
  q = np.broadcast_to(x[:, :1], x.shape)
  rq = np.asarray(transformer.rotary(jnp.asarray(q)))[0, :, 0]
  assert np.allclose(rq[1] @ rq[3], rq[0] @ rq[2], atol=1e-5)


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_decoder_is_causal(positions):
  model = _tiny(positions=positions, max_len=9)
  tokens = _tokens()
  params = model.init(jax.random.key(0), tokens)["params"]
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t)[0])
  h = apply(params, tokens)
  h2 = apply(params, tokens.at[:, 5].set(3))
  np.testing.assert_array_equal(h[:, :5], h2[:, :5])
  assert float(jnp.max(jnp.abs(h[:, 5:] - h2[:, 5:]))) > 1e-4


def test_output_matrix_layouts():
  tokens = _tokens()
  tied = _tiny(True)
  p = tied.init(jax.random.key(0), tokens)["params"]
  assert p["embedding"].shape == (V, D) and "head" not in p
  assert tied.head_layout == "vd"
  untied = _tiny(False)
  p = untied.init(jax.random.key(0), tokens)["params"]
  assert p["head"]["kernel"].shape == (D, V) and untied.head_layout == "dv"
  _, w = untied.apply({"params": p}, tokens)
  assert w is p["head"]["kernel"] or np.array_equal(w, p["head"]["kernel"])


@pytest.mark.parametrize("layout", ["vd", "dv"])
@pytest.mark.parametrize("opts", [
    head_lib.HeadOptions(),
    head_lib.HeadOptions(z_loss=1e-2, label_smoothing=0.1, softcap=3.0),
])
def test_fused_head_equals_optax_on_logits(layout, opts):
  rng = np.random.default_rng(1)
  h = jnp.asarray(rng.standard_normal((24, D)), jnp.float32)
  shape = (V, D) if layout == "vd" else (D, V)
  w = jnp.asarray(rng.standard_normal(shape) * 0.3, jnp.float32)
  labels = jnp.asarray(rng.integers(0, V, 24), jnp.int32)
  mask = jnp.asarray(rng.random(24) > 0.25)

  def loss(head):
    return jax.jit(jax.value_and_grad(
        lambda h, w: head_lib.loss_sum(h, w, labels, mask, layout=layout,
                                       opts=opts._replace(lm_head=head)),
        argnums=(0, 1)))(h, w)

  (fused, g_fused), (mat, g_mat) = loss("fused"), loss("materialized")
  # Independent formula: optax on the logits built here.
  z = h @ (w.T if layout == "vd" else w)
  if opts.softcap:
    z = opts.softcap * jnp.tanh(z / opts.softcap)
  a = opts.label_smoothing
  t = (1 - a) * jax.nn.one_hot(labels, V) + a / V
  per = optax.softmax_cross_entropy(z, t) + opts.z_loss * jax.nn.logsumexp(
      z, axis=-1) ** 2
  expected = float(jnp.sum(jnp.where(mask, per, 0.0)))
  np.testing.assert_allclose(float(fused), expected, rtol=1e-5)
  np.testing.assert_allclose(float(mat), expected, rtol=1e-5)
  assert _max_diff(g_fused, g_mat) < 1e-5


def _mesh_or_skip(data, model):
  if jax.device_count() < data * model:
    pytest.skip("needs 8 (host) devices; tests/conftest.py forces them")
  return step_lib.make_mesh(data, model)


@pytest.mark.parametrize("tie", [True, False])
def test_mesh_step_equals_single_device(tie):
  """2 (data) x 4 (model) devices: loss, gradients and two optimizer steps
  equal the single-device run (vocab-parallel embedding and fused head)."""
  mesh = _mesh_or_skip(2, 4)
  model = _tiny(tie)
  opts = head_lib.HeadOptions(z_loss=1e-3, label_smoothing=0.05, softcap=5.0)
  tokens = _tokens()
  tx = optax.adamw(1e-2, weight_decay=0.1)
  one = step_lib.make_mesh(1, 1)
  state1 = step_lib.init_state(model, tx, 0, 8, one)
  state8 = step_lib.init_state(model, tx, 0, 8, mesh)
  emb = state8.params["embedding"].sharding.spec
  assert emb == jax.sharding.PartitionSpec("model", None)
  if not tie:
    assert state8.params["head"]["kernel"].sharding.spec == (
        jax.sharding.PartitionSpec(None, "model"))
  loss1 = step_lib.make_loss_fn(model, None, opts, 0)
  loss8 = step_lib.make_loss_fn(model, mesh, opts, 0)
  tok8 = jax.device_put(tokens, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec("data")))
  l1, g1 = jax.jit(jax.value_and_grad(loss1))(state1.params, tokens)
  l8, g8 = jax.jit(jax.value_and_grad(loss8))(state8.params, tok8)
  np.testing.assert_allclose(float(l8), float(l1), rtol=1e-6)
  assert _max_diff(g1, g8) < 1e-5
  step1 = jax.jit(step_lib.make_train_step(loss1, tx))
  step8 = jax.jit(step_lib.make_train_step(loss8, tx))
  for _ in range(2):
    state1, m1 = step1(state1, tokens)
    state8, m8 = step8(state8, tok8)
  np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)
  assert _max_diff(state1.params, state8.params) < 1e-5
  assert state8.params["embedding"].sharding.is_equivalent_to(
      jax.sharding.NamedSharding(mesh, emb), 2)


@pytest.mark.parametrize("mesh_shape", [None, (2, 2)])
def test_selection_step_picks_uds_of_the_sequence_losses(mesh_shape):
  """The step's selected rows are ``uds_select`` of each candidate's mean
  loss (optax on the logits) and unit mean hidden state, computed here by
  hand; the update is a plain step on those rows; the memory is updated."""
  mesh = None if mesh_shape is None else _mesh_or_skip(*mesh_shape)
  model, k, alpha = _tiny(), 4, 0.7
  opts = head_lib.HeadOptions(z_loss=1e-3)
  tokens = _tokens(b=8, seed=1)
  tx = optax.adam(1e-2)
  rng = np.random.default_rng(0)
  past = rng.standard_normal((5, D)).astype(np.float32)
  past /= np.linalg.norm(past, axis=1, keepdims=True)
  memory = UDSMemory(jnp.asarray(past), jnp.int32(2), jnp.int32(2))
  state = step_lib.init_state(model, tx, 0, 8,
                              mesh or step_lib.make_mesh(1, 1), lambda: memory)
  select = selection_lib.make_select_fn(model, mesh, opts, 0, k=k,
                                        alpha=alpha)
  loss_fn = step_lib.make_loss_fn(model, mesh, opts, 0)
  new, metrics = jax.jit(step_lib.make_train_step(loss_fn, tx, select))(
      state, tokens)
  state = jax.device_get(state)   # one device from here on
  # By hand: per-sequence loss from the full logits, pooled hidden states.
  h, w = model.apply({"params": state.params}, tokens[:, :-1])
  mask = np.asarray(tokens[:, 1:] != 0)
  tok = head_lib.materialized_loss(
      h.reshape(-1, D), w, tokens[:, 1:].reshape(-1), jnp.asarray(mask).ravel(),
      layout="vd", opts=opts).reshape(mask.shape)
  utility = np.sum(np.asarray(tok), 1) / mask.sum(1)
  pooled = (np.asarray(h) * mask[..., None]).sum(1) / mask.sum(1)[:, None]
  emb = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
  idx, _, want_memory = jax.jit(
      lambda u, e, m: uds_select(u[:, None, None], e, m, k, alpha=alpha))(
          jnp.asarray(utility), jnp.asarray(emb), memory)
  np.testing.assert_array_equal(np.asarray(metrics["selected"]),
                                np.asarray(idx))
  assert len(set(np.asarray(idx).tolist())) == k and min(idx) >= 0
  np.testing.assert_allclose(np.asarray(new.selection.buffer),
                             np.asarray(want_memory.buffer), atol=1e-5)
  assert int(new.selection.count) == min(2 + k, 5)
  plain, m2 = jax.jit(step_lib.make_train_step(
      step_lib.make_loss_fn(model, None, opts, 0), tx))(
          state._replace(selection=None), tokens[np.asarray(idx)])
  np.testing.assert_allclose(float(metrics["loss"]), float(m2["loss"]),
                             rtol=1e-5)
  assert _max_diff(new.params, plain.params) < 1e-5
  np.testing.assert_allclose(float(metrics["selected_loss"]),
                             np.mean(utility[np.asarray(idx)]), rtol=1e-5)


def test_eval_sums_are_the_cross_entropy_of_the_logits():
  mesh = _mesh_or_skip(2, 4)
  model = _tiny(False)
  tokens = _tokens()
  params = model.init(jax.random.key(0), tokens[:, :-1])["params"]
  opts = head_lib.HeadOptions(lm_head="materialized", z_loss=0.1,
                              label_smoothing=0.2)
  sums = jax.jit(step_lib.make_sums_fn(model, mesh, opts, 0, eval_only=True))
  total, count = sums(params, tokens)
  h, w = model.apply({"params": params}, tokens[:, :-1])
  ce = optax.softmax_cross_entropy_with_integer_labels(h @ w, tokens[:, 1:])
  mask = tokens[:, 1:] != 0
  np.testing.assert_allclose(float(total), float(jnp.sum(ce * mask)),
                             rtol=1e-5)
  assert float(count) == float(jnp.sum(mask))


def test_unigram_baselines_against_a_loop():
  rng = np.random.default_rng(0)
  train = rng.integers(0, 6, (5, 7))
  val = rng.integers(0, 6, (3, 7))
  k = 8
  counts = {}
  for t in train[:, 1:].ravel():
    if t:
      counts[t] = counts.get(t, 0) + 1
  total = sum(counts.values())
  nll = [-np.log((counts.get(t, 0) + 1) / (total + k))
         for t in val[:, 1:].ravel() if t]
  np.testing.assert_allclose(
      baseline.unigram_perplexity(train, val, k, 0), np.exp(np.mean(nll)))
  tv = [t for t in val[:, 1:].ravel() if t]
  ent = -sum(tv.count(t) / len(tv) * np.log(tv.count(t) / len(tv))
             for t in set(tv))
  np.testing.assert_allclose(
      baseline.oracle_unigram_perplexity(val, k, 0), np.exp(ent))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  c = lm_config.get_config("smoke")
  c.data_dir = str(tmp_path_factory.mktemp("lm_tfds"))
  return c


def _restore_params(workdir, config):
  from experiments import checkpointing
  model, tx = program.make_model(config), program.make_optimizer(config)
  mesh = step_lib.make_mesh(*validation.mesh_shape(config))
  target = step_lib.init_state(model, tx, config.seed, config.seq_len, mesh)
  ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  step, state, _ = ck.restore_latest(target)
  ck.close()
  return step, state


def test_program_resume_is_bit_identical(smoke, tmp_path):
  full = program.train(smoke, str(tmp_path / "full"))
  assert full["compiles"] == 1 and np.isfinite(full["val_ppl"])
  assert full["unigram_ppl"] > full["oracle_unigram_ppl"] > 1
  part = smoke.copy_and_resolve_references()
  part.num_steps = 3
  program.train(part, str(tmp_path / "resumed"))
  resumed = program.train(smoke, str(tmp_path / "resumed"))
  assert resumed["val_ppl"] == full["val_ppl"]
  _, a = _restore_params(str(tmp_path / "full"), smoke)
  _, b = _restore_params(str(tmp_path / "resumed"), smoke)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  rows = lambda d: [json.loads(l) for l in open(tmp_path / d / "metrics.jsonl")]
  assert rows("full") == rows("resumed")
  assert (tmp_path / "full" / "results.md").read_text().count("|") > 9


def test_program_on_a_mesh_resumes_and_matches_one_device(smoke, tmp_path):
  """2 (data) x 2 (model) devices: sharded checkpoints restore, and the run
  ends where the one-device run does."""
  _mesh_or_skip(2, 2)
  one = smoke.copy_and_resolve_references()
  one.mesh.data = 1
  ref = program.train(one, str(tmp_path / "one"))
  c = smoke.copy_and_resolve_references()
  c.mesh.data, c.mesh.model, c.num_steps = 2, 2, 3
  program.train(c, str(tmp_path / "mesh"))
  c.num_steps = smoke.num_steps
  got = program.train(c, str(tmp_path / "mesh"))
  np.testing.assert_allclose(got["val_ppl"], ref["val_ppl"], rtol=1e-4)
  np.testing.assert_allclose(got["final_loss"], ref["final_loss"], rtol=1e-4)
  step, state = _restore_params(str(tmp_path / "mesh"), c)
  assert step == smoke.num_steps
  emb = state.params["embedding"]
  assert emb.sharding.spec[0] == "model" and len(emb.sharding.device_set) == 4


def test_program_with_uds_selection_resumes_bit_identical(smoke, tmp_path):
  """Smoke run with online batch selection; the memory is checkpointed, so
  a run resumed at step 3 ends bit-identical."""
  c = smoke.copy_and_resolve_references()
  c.mesh.data = 1
  c.selection.method, c.selection.candidates = "uds", 24
  c.selection.memory_size = 16
  full = program.train(c, str(tmp_path / "full"))
  assert full["compiles"] == 1 and np.isfinite(full["val_ppl"])
  part = c.copy_and_resolve_references()
  part.num_steps = 3
  program.train(part, str(tmp_path / "resumed"))
  resumed = program.train(c, str(tmp_path / "resumed"))
  assert resumed["val_ppl"] == full["val_ppl"]
  rows = lambda d: [json.loads(l) for l in open(tmp_path / d / "metrics.jsonl")]
  assert rows("full") == rows("resumed")
  train_rows = [r for r in rows("full") if "selected_loss" in r]
  assert len(train_rows) >= 3
  assert all(r["selected_loss"] >= r["candidate_loss"] for r in train_rows)


@pytest.mark.parametrize("field, value, match", [
    ("model.heads", 3, "config.model.heads"),
    ("lm_head", "logits", "config.lm_head"),
    ("head.label_smoothing", 1.0, "config.head.label_smoothing"),
    ("head.filter_eps", "often", "config.head.filter_eps"),
    ("vocab_size", 100, "config.vocab_size"),
    ("dataset", "wiki", "config.dataset"),
    ("mesh.model", 3, "config.vocab_size"),        # 512 % 3
    ("mesh.model", 64, "config.mesh"),
    ("batch_size", 0, "config.batch_size"),
    ("model.dtype", "float16", "config.model.dtype"),
    ("selection.method", "random", "config.selection.method"),
    ("selection.alpha", -1.0, "config.selection.alpha"),
    ("selection.candidates", 8, "config.selection.candidates"),  # = batch
    ("selection.memory_size", 4, "config.selection.memory_size"),
])
def test_config_errors_name_the_field(field, value, match):
  c = lm_config.get_config("smoke")
  if field.startswith("selection.") and field != "selection.method":
    c.selection.method = "uds"
  parent, _, leaf = field.rpartition(".")
  (c[parent] if parent else c)[leaf] = value
  with pytest.raises(config_validation.ConfigError, match=match):
    validation.validate(c)


def test_config_error_with_vocab_parallel_head():
  c = lm_config.get_config("smoke")
  c.mesh.model = 2
  c.head.fused_backward = True
  if jax.device_count() < 2:
    pytest.skip("needs 2 devices")
  with pytest.raises(config_validation.ConfigError,
                     match="config.head.fused_backward"):
    validation.validate(c)


def _run(*args, timeout=600):
  return subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config", os.path.join(ROOT, "configs", "lm.py") + ":smoke", *args],
      capture_output=True, text=True, cwd=ROOT, timeout=timeout,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_cli_prints_the_perplexity_table(smoke, tmp_path):
  proc = _run(f"--config.data_dir={smoke.data_dir}", f"--workdir={tmp_path}",
              "--plot")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| unigram (train counts, add-one) |" in proc.stdout
  assert "| transformer (fused head, 6 steps) |" in proc.stdout
  assert (tmp_path / "curves.png").stat().st_size > 1000


def test_cli_config_error_is_one_line_exit_2(tmp_path):
  proc = _run("--config.model.heads=3", f"--workdir={tmp_path}", timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr
  assert errors[0].startswith("error: config.model.heads:")
  assert not (tmp_path / "checkpoints").exists()

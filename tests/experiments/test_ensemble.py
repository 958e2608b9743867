"""The diverse-ensemble study: metrics vs numpy, stacked step vs per-member
steps, every regularizer, validation, and the smoke preset end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ensemble as ensemble_config
from experiments import config_validation
from experiments import models
from experiments.ensemble import members
from experiments.ensemble import metrics
from experiments.ensemble import program
from experiments.ensemble import regularizers
from experiments.ensemble import validation


def _ece_numpy(probs, labels, num_bins=15):
  """Guo et al. 2017 Eq. (3), bin by bin with Python loops."""
  conf = probs.max(-1)
  pred = probs.argmax(-1)
  total = 0.0
  for b in range(num_bins):
    lo, hi = b / num_bins, (b + 1) / num_bins
    inside = [n for n in range(len(conf)) if lo < conf[n] <= hi]
    if inside:
      acc = np.mean([pred[n] == labels[n] for n in inside])
      avg_conf = np.mean([conf[n] for n in inside])
      total += len(inside) / len(conf) * abs(acc - avg_conf)
  return total


@pytest.mark.parametrize("num_bins", [15, 4])
def test_ece_nll_accuracy_match_numpy(num_bins):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(200, 5)) * 3
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  labels = rng.integers(0, 5, size=200)
  log_probs = jnp.log(jnp.asarray(probs, jnp.float32))
  ece = jax.jit(metrics.expected_calibration_error,
                static_argnames="num_bins")(log_probs, labels,
                                            num_bins=num_bins)
  np.testing.assert_allclose(ece, _ece_numpy(probs, labels, num_bins),
                             atol=1e-5)
  out = jax.jit(metrics.summarize)(log_probs, labels)
  np.testing.assert_allclose(out["nll"],
                             -np.mean(np.log(probs[np.arange(200), labels])),
                             rtol=1e-5)
  np.testing.assert_allclose(out["accuracy"],
                             np.mean(probs.argmax(-1) == labels))


def test_ece_bin_edges_are_right_closed():
  # Confidence exactly 0.6 = 9/15 belongs to bin (8/15, 9/15] (Guo et al.).
  probs = np.array([[0.6, 0.4], [0.6 + 1e-3, 0.4 - 1e-3]])
  labels = np.array([0, 1])
  got = metrics.expected_calibration_error(jnp.log(jnp.asarray(probs)),
                                           jnp.asarray(labels))
  np.testing.assert_allclose(got, _ece_numpy(probs, labels), atol=1e-6)
  np.testing.assert_allclose(got, 0.5 * 0.4 + 0.5 * 0.601, atol=1e-5)


def test_ensemble_log_probs_and_diversity_match_numpy():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(3, 6, 4)).astype(np.float32) * 2
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  np.testing.assert_allclose(np.exp(metrics.ensemble_log_probs(z)),
                             p.mean(0), rtol=1e-5)
  div = jax.jit(metrics.member_diversity)(jnp.asarray(z))
  top = z.argmax(-1)
  pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
  disagree = np.mean([[top[i, n] != top[j, n] for i, j in pairs]
                      for n in range(6)])
  np.testing.assert_allclose(div["disagreement"], disagree, atol=1e-6)
  vendi = []
  for n in range(6):  # Vendi (q=1) of the cosine kernel of 3 prob. vectors
    v = p[:, n] / np.linalg.norm(p[:, n], axis=1, keepdims=True)
    lam = np.clip(np.linalg.eigvalsh(v @ v.T / 3), 0, None)
    lam = lam[lam > 1e-12]
    vendi.append(np.exp(-np.sum(lam * np.log(lam))))
  np.testing.assert_allclose(div["vendi"], np.mean(vendi), rtol=1e-4)


def _tiny(num_members=3):
  model = models.get_model("mlp_tiny", num_classes=4)
  keys = jax.random.split(jax.random.key(0), num_members)
  params = members.init_members(model, keys, jnp.zeros((1, 3, 3, 1)))
  x = jax.random.uniform(jax.random.key(1), (2, 5, 3, 3, 1))
  y = jax.random.randint(jax.random.key(2), (2, 5), 0, 4)
  return model, params, {"x": x, "y": y}


def test_stacked_step_equals_per_member_steps():
  model, params, batch = _tiny()
  tx = optax.adam(1e-2)
  step = jax.jit(members.make_train_step(model, tx, None, 0.0))
  state = members.init_state(params, tx)
  for _ in range(3):
    state, _ = step(state, batch)
  x = batch["x"].reshape((-1, 3, 3, 1))
  y = batch["y"].reshape(-1)

  @jax.jit
  def single_step(p, opt):
    def loss(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    updates, opt = tx.update(jax.grad(loss)(p), opt, p)
    return optax.apply_updates(p, updates), opt

  for i, p in enumerate(members.unstack(params)):
    opt = tx.init(p)
    for _ in range(3):
      p, opt = single_step(p, opt)
    got = jax.tree_util.tree_map(lambda l, i=i: l[i], state.params)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        got, p)


@pytest.mark.parametrize("name", regularizers.NAMES)
def test_every_regularizer_trains_finitely(name):
  model, params, batch = _tiny(num_members=2)
  hparams = dict(regularizers.REGULARIZERS[name].hparams)
  hparams["weight"] = 0.5
  if name == "dverge":
    hparams["num_steps"] = 2
  weight, penalty = regularizers.penalty_fn(name, hparams)
  tx = optax.adam(1e-2)
  step = jax.jit(members.make_train_step(model, tx, penalty, weight))
  state, out = step(members.init_state(params, tx), batch)
  state, out = step(state, batch)
  assert np.isfinite(float(out["loss"])) and np.isfinite(float(out["penalty"]))
  assert all(np.all(np.isfinite(l))
             for l in jax.tree_util.tree_leaves(state.params))
  if name == "none":
    assert float(out["penalty"]) == 0.0


def test_diversity_penalties_reward_diverse_members():
  """Identical members score no diversity; different ones a negative penalty."""
  model, params, batch = _tiny(num_members=2)
  x = batch["x"].reshape((-1, 3, 3, 1))
  y = batch["y"].reshape(-1)
  same = jax.tree_util.tree_map(lambda l: jnp.stack([l[0], l[0]]), params)
  for name in ("pairwise_kl", "pairwise_js", "ambiguity", "vendi_predictions"):
    _, penalty = regularizers.penalty_fn(
        name, regularizers.REGULARIZERS[name].hparams)

    @jax.jit
    def value(p, penalty=penalty):
      logits, feats = members.apply_members(model, p, x)
      return penalty(regularizers.Context(logits, feats, y, x, p, p, None,
                                          None))

    values = [float(value(same)), float(value(params))]
    offset = -1.0 if name == "vendi_predictions" else 0.0  # Vendi >= 1
    assert values[0] == pytest.approx(offset, abs=1e-5), name
    assert values[1] < values[0] - 1e-6, name


def test_shared_body_keeps_pretrained_except_heads():
  model, params, _ = _tiny()
  pre = jax.tree_util.tree_map(lambda l: l[0] + 1.0, params)
  shared = members.share_body(pre, params)
  np.testing.assert_array_equal(shared["dense0"]["kernel"][2],
                                pre["dense0"]["kernel"])
  np.testing.assert_array_equal(shared["head"]["kernel"],
                                params["head"]["kernel"])


@pytest.mark.parametrize("field,value,match", [
    ("regularizers", ("nope",), "config.regularizers: unknown name 'nope'"),
    ("member_inits", ("random",), "config.member_inits: unknown name"),
    ("regularizers", (), "config.regularizers: must be a non-empty"),
    ("wise_alpha", 2.0, "config.wise_alpha"),
    ("test_domains", ("15",), "config.test_domains"),
])
def test_validation_names_the_field(field, value, match):
  c = ensemble_config.get_config("smoke")
  c[field] = value
  with pytest.raises(config_validation.ConfigError, match=match):
    validation.validate(c)


def test_validation_names_unknown_hparam():
  c = ensemble_config.get_config("smoke")
  c.diversity.pairwise_js.temperature = 1.0
  with pytest.raises(config_validation.ConfigError,
                     match="config.diversity.pairwise_js.temperature"):
    validation.validate(c)


def test_table_rows_match_regularizers():
  c = ensemble_config.get_config()
  assert set(c.diversity) == set(regularizers.NAMES)
  for name, row in regularizers.REGULARIZERS.items():
    assert set(c.diversity[name]) == set(row.hparams), name
  validation.validate(c)


def test_smoke_preset_end_to_end(tmp_path):
  from diversity_jax import data
  c = ensemble_config.get_config("smoke")
  c.data_dir = str(tmp_path / "tensorflow_datasets")
  data.load(c.dataset, data_dir=c.data_dir)
  out = program.run(c, str(tmp_path / "run"))
  runs = out["runs"]
  assert len(runs) == len(c.member_inits) * len(c.regularizers)
  for r in runs:
    res = r["results"]
    assert set(res) == {"id", "ood", *c.test_domains}
    models_ = set(res["id"])
    assert {"member 0", "member 1", "ensemble", "uniform soup"} <= models_
    if r["init"] == "shared":
      assert "pre-trained" in models_
    for row in res["ood"].values():
      assert all(np.isfinite(v) for v in row.values())
  text = (tmp_path / "run" / "results.md").read_text()
  assert text.startswith("| init | regularizer | ens. acc")
  assert out["table"]["stem"] == "results"
  assert out["table"]["rows"][0][:3] == ["init", "regularizer", "ens. acc"]
  assert len(out["table"]["rows"]) == 1 + len(runs)
  # A rerun resumes every finished run from its checkpoint: same table.
  again = program.run(c, str(tmp_path / "run"))
  assert again["table"]["markdown"] == out["table"]["markdown"]


def test_sweep_over_seeds(tmp_path, monkeypatch):
  from experiments.studies import ensemble as study
  c = ensemble_config.get_config("smoke")
  c.member_inits = ("independent",)
  seen = []

  def fake_run(config, workdir):
    seen.append(config.seed)
    acc = {"accuracy": 0.5 + 0.1 * config.seed}
    table = {m: acc for m in ("ensemble", "members (mean)", "uniform soup")}
    return {"runs": [{"init": "independent", "regularizer": "ambiguity",
                      "results": {"id": table, "ood": table}}]}

  monkeypatch.setattr(study.program, "run", fake_run)
  (table,) = study.sweep(c, str(tmp_path))
  assert seen == [0, 1]
  assert table["rows"][1][:2] == ["independent ambiguity", "55.0 ± 3.5"]
  assert (tmp_path / "sweep.md").exists()

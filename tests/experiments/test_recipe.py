"""The recipe builder (one DG run) and the generic trainer on a non-DG recipe.

The DG loss is checked against a numpy re-computation from the model's
logits: the mean over domains of the per-domain mean cross-entropy, plus the
V-REx penalty (variance of the domain risks) with DomainBed's warm-up
weight.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diversity_jax
from diversity_jax import data
from experiments import trainer
from experiments.recipe import Recipe
from experiments.studies import dg_recipe


def _numpy_domain_ce(logits, y):
  logits = np.asarray(logits, np.float64)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, np.asarray(y)[..., None], -1)[..., 0]
  return ce.mean(axis=1)  # (E,)


def _build(config, domain="d0"):
  ds = data.load("mock")
  mesh = trainer.make_mesh(config)
  return dg_recipe.build_recipe(config, ds, domain, mesh), ds


@pytest.mark.parametrize("algorithm", ["erm", "vrex"])
def test_dg_loss_matches_numpy(smoke_config, algorithm):
  c = smoke_config
  c.algorithm, c.loss = algorithm, "cross_entropy"
  c.hparams.vrex.anneal_steps, c.hparams.vrex.weight = 3, 10.0
  recipe, ds = _build(c)
  params, extra = recipe.init(jax.random.key(0))
  assert extra == () and "head" in params
  batch = recipe.batches(0)
  assert batch["x"].shape[:2] == (len(ds.domains) - 1, c.batch_size)
  loss_fn = jax.jit(recipe.loss_fn)
  from experiments import models
  model = models.get_model(c.model, ds.num_classes)
  e, b = batch["y"].shape
  logits = model.apply({"params": params},
                       batch["x"].reshape((e * b,) + batch["x"].shape[2:]))
  risks = _numpy_domain_ce(np.asarray(logits).reshape(e, b, -1), batch["y"])
  for step, w in ((0, 1.0), (2, 1.0), (3, 10.0)):  # warm-up weight 1
    loss, aux = loss_fn(params, batch, step, extra)
    want = risks.mean() + (w * risks.var() if algorithm == "vrex" else 0.0)
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    acc = np.mean(np.argmax(np.asarray(logits).reshape(e, b, -1), -1) ==
                  batch["y"])
    np.testing.assert_allclose(float(aux["metrics"]["accuracy"]), acc)
  # Eval records and the report.
  record = recipe.evaluate(params)
  assert set(record) == {"val/d1", "val/d2", "val_acc", "test_in", "test_out"}
  np.testing.assert_allclose(record["val_acc"],
                             (record["val/d1"] + record["val/d2"]) / 2)
  assert recipe.report({**record, "step": 1}, {**record, "step": 2}) == {
      "val_acc": record["val_acc"], "test_acc": record["test_in"],
      "last_test_acc": record["test_in"]}
  assert recipe.select == "val_acc"


def test_fishr_extra_state_and_exclude(smoke_config):
  c = smoke_config
  c.algorithm = "fishr"
  ds = data.load("mock")
  recipe = dg_recipe.build_recipe(c, ds, "d1", trainer.make_mesh(c),
                                  exclude=("d0",))
  params, extra = recipe.init(jax.random.key(0))
  # One training domain left (d2): the EMA has one row per training domain.
  p = params["head"]["kernel"].size + params["head"]["bias"].size
  assert extra.ema.shape == (1, p)
  assert recipe.batches(0)["y"].shape[0] == 1
  _, aux = jax.jit(recipe.loss_fn)(params, recipe.batches(0), 0, extra)
  assert aux["extra"].ema.shape == (1, p) and np.all(
      np.asarray(aux["extra"].ema) >= 0)
  assert set(recipe.evaluate(params)) == {"val/d2", "val_acc", "test_in",
                                          "test_out"}


@pytest.mark.parametrize("algorithm,k,state_type", [
    ("gsam", 1, diversity_jax.transforms.GSAMState),
    ("sam", 3, diversity_jax.transforms.EveryKStepsState),
])
def test_rule_in_the_chain(smoke_config, algorithm, k, state_type):
  c = smoke_config
  c.algorithm, c.every_k.k = algorithm, k
  recipe, _ = _build(c)
  params, _ = recipe.init(jax.random.key(0))
  state = recipe.tx.init(params)
  assert any(isinstance(s, state_type) for s in jax.tree.leaves(
      state, is_leaf=lambda s: isinstance(s, state_type)))


def _toy_recipe(seed_offset=0.0):
  """A regression recipe with no domains: the trainer must not care."""
  rng = np.random.RandomState(0)
  w_true = np.array([1.5, -2.0], np.float32)

  def batches(step):
    r = np.random.RandomState(step)
    x = r.randn(1, 8, 2).astype(np.float32)
    return {"x": x, "t": x @ w_true}

  def loss_fn(params, batch, step, extra):
    err = batch["x"] @ params["w"] - batch["t"]
    loss = jnp.mean(err ** 2)
    return loss, {"metrics": {"mse": loss}, "extra": extra + 1}

  x_eval = rng.randn(64, 2).astype(np.float32)

  def evaluate(params):
    err = x_eval @ np.asarray(params["w"]) - x_eval @ w_true
    return {"neg_mse": -float(np.mean(err ** 2))}

  return Recipe(
      init=lambda key: ({"w": jnp.full(2, seed_offset, jnp.float32)},
                        jnp.zeros((), jnp.int32)),
      loss_fn=loss_fn, tx=optax.with_extra_args_support(optax.sgd(0.1)),
      batches=batches, evaluate=evaluate,
      report=lambda best, last: {"best": best["neg_mse"]},
      select="neg_mse", name="toy", describe="toy regression")


def test_generic_trainer_on_a_non_dg_recipe(smoke_config, tmp_path):
  c = smoke_config
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every = 6, 2, 2, 1
  mesh = trainer.make_mesh(c)
  result = trainer.train_one(_toy_recipe(), c, str(tmp_path / "a"), mesh)
  assert result["compiles"] == 1 and result["num_steps"] == 6
  evals = [r["neg_mse"] for r in result["evals"]]
  assert [r["step"] for r in result["evals"]] == [2, 4, 6]
  assert evals[-1] > evals[0]  # SGD on a quadratic: the error falls
  assert result["best"] == max(evals)
  assert result["selected_step"] == 2 + 2 * int(np.argmax(evals))
  # The extra state is carried (and checkpointed): one increment per step.
  import orbax.checkpoint as ocp
  state = ocp.StandardCheckpointer().restore(
      str(tmp_path / "a" / "checkpoints" / "6" / "state"))
  assert int(state["extra"]) == 6 and int(state["step"]) == 6
  # Its per-step metrics are logged.
  from experiments import metrics
  rows = metrics.read_jsonl(str(tmp_path / "a" / "metrics.jsonl"))
  assert [r["step"] for r in rows if r["split"] == "train"] == list(
      range(1, 7))
  assert all("mse" in r for r in rows if r["split"] == "train")

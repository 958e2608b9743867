"""DomainBed's three model selection methods on a hand-computed small table.

Three domains a, b, c; held-out domain a; eval records at steps 1, 2, 3.
Expected values are worked out by hand below, following DomainBed's
``model_selection.py`` (IIDAccuracySelectionMethod, OracleSelectionMethod,
LeaveOneOutSelectionMethod, SelectionMethod.sweep_acc).
"""

import pytest

from diversity_jax import data

from experiments import selection

# The test run (a held out): val_acc = mean of the training domains' "out"
# accuracies; test_in / test_out: domain a's splits.
TEST = [
    {"step": 1, "val_acc": 0.60, "test_in": 0.50, "test_out": 0.55},
    {"step": 2, "val_acc": 0.80, "test_in": 0.40, "test_out": 0.45},
    {"step": 3, "val_acc": 0.80, "test_in": 0.70, "test_out": 0.65},
]
# Cross-validation runs: (a, b) held out -> test_in is b's accuracy; (a, c)
# held out -> c's.
CV_B = [{"step": 1, "test_in": 0.30}, {"step": 2, "test_in": 0.90},
        {"step": 3, "test_in": 0.50}]
CV_C = [{"step": 1, "test_in": 0.40}, {"step": 2, "test_in": 0.60},
        {"step": 3, "test_in": 0.60}]


def test_training_domain_first_of_equal_maxima():
  # val_acc 0.6, 0.8, 0.8: step 2 (the first maximum), test_in 0.40.
  assert selection.select("training_domain", TEST) == {
      "step": 2, "val_acc": 0.80, "test_acc": 0.40}


def test_test_domain_is_the_last_step():
  # No early stopping: step 3, val = test_out 0.65, test = test_in 0.70.
  assert selection.select("test_domain", TEST) == {
      "step": 3, "val_acc": 0.65, "test_acc": 0.70}


def test_leave_one_domain_out():
  # (b + c) / (3 - 1): step 1: 0.35, step 2: 0.75, step 3: 0.55 -> step 2;
  # its test accuracy is the test run's test_in at step 2, 0.40.
  got = selection.select("leave_one_domain_out", TEST, [CV_B, CV_C], 3)
  assert got["step"] == 2 and got["test_acc"] == 0.40
  assert got["val_acc"] == pytest.approx(0.75)
  # A step missing from one cross-validation run is skipped: without step 2
  # in CV_C, step 3 (0.55) wins over step 1 (0.35).
  got = selection.select("leave_one_domain_out", TEST,
                         [CV_B, [CV_C[0], CV_C[2]]], 3)
  assert got["step"] == 3 and got["test_acc"] == 0.70
  # A missing domain: no result (DomainBed returns None).
  assert selection.select("leave_one_domain_out", TEST, [CV_B], 3) is None


def test_sweep_acc_picks_the_best_trial_later_of_equals():
  trials = [{"val_acc": 0.7, "test_acc": 0.1}, None,
            {"val_acc": 0.9, "test_acc": 0.2},
            {"val_acc": 0.9, "test_acc": 0.3}]
  assert selection.sweep_acc(trials) == 0.3
  assert selection.sweep_acc([None]) is None
  with pytest.raises(ValueError, match="unknown selection method"):
    selection.select("oracle", TEST)


def test_train_command_tables_per_selection_method(smoke_config, tmp_path):
  """End to end on mock data: one table per method, from the runs' records."""
  from experiments.studies import dg
  c = smoke_config  # held-out domain d0 only
  c.num_steps, c.eval_every, c.checkpoint_every = 4, 2, 4
  c.selection = "training_domain,test_domain,leave_one_domain_out"
  out = dg.run(c, str(tmp_path))
  assert [t["stem"] for t in out] == [
      "results", "results_test_domain", "results_leave_one_domain_out"]
  assert "leave-one-domain-out cross-validation" in out[2]["title"]
  (d0,) = c.test_domains
  cv = {}
  for other in ("d1", "d2"):  # the cross-validation runs hold out d0 too
    r = dg.train_one(c, str(tmp_path / f"cv_{d0}_{other}"), other,
                     dataset=data.load("mock"), exclude=(d0,))
    assert r["compiles"] == 0  # already trained by the command: resumed
    cv[other] = r["evals"]
    assert "val/d0" not in r["evals"][0]  # d0 excluded from the cv runs
  test = out[0]["results"][0]["evals"]
  want = {
      "results": selection.training_domain(test)["test_acc"],
      "results_test_domain": test[-1]["test_in"],
      "results_leave_one_domain_out": selection.leave_one_domain_out(
          test, [cv["d1"], cv["d2"]], 3)["test_acc"],
  }
  for t in out:
    row = t["markdown"].splitlines()[2]
    assert row == f"| erm | {100 * want[t['stem']]:.1f} | " \
        f"{100 * want[t['stem']]:.1f} | 1 |", (t["stem"], row)
    assert (tmp_path / f"{t['stem']}.md").exists()

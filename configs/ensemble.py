"""Diverse ensembles on RotatedMNIST: regularizers, soups, calibration.

Command (offline, CPU)::

  python -m experiments.train --config configs/ensemble.py

PLACEHOLDER
"""

import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.task = "ensemble"            # experiments/ensemble/
  c.name = "ensemble"
  c.dataset = "rotated_mnist"
  c.data_dir = ""
  c.download = False
  c.train_domains = ("15", "30", "45", "60")   # in distribution
  c.test_domains = ("0", "75")                 # held-out rotations
  c.holdout_fraction = 0.2   # in-distribution evaluation: 20% of each domain
  c.model = "mlp"
  c.num_members = 4
  # Grid: every member init x every regularizer (one ensemble each).
  c.member_inits = ("shared", "independent")
  c.regularizers = ("none", "pairwise_kl", "pairwise_js", "ambiguity",
                    "vendi_predictions", "vendi_features", "feature_cosine",
                    "orthogonal_updates", "dverge")
  # One sub-dict per regularizer: its weight and its own hyperparameters.
  c.diversity = ml_collections.ConfigDict({
      "none": {"weight": 0.0},
      "pairwise_kl": {"weight": 0.01},
      "pairwise_js": {"weight": 0.5},
      "ambiguity": {"weight": 0.5},
      "vendi_predictions": {"weight": 0.1, "q": 1.0},
      "vendi_features": {"weight": 0.1, "q": 1.0},
      "feature_cosine": {"weight": 0.1},
      "orthogonal_updates": {"weight": 1e-3},
      # DVERGE (Yang et al. 2020): eps 0.07, step 0.007, 10 steps, mu 1.
      "dverge": {"weight": 1.0, "epsilon": 0.07, "step_size": 0.007,
                 "num_steps": 10, "momentum": 1.0},
  })
  c.pretrain_steps = 500     # the shared pre-trained network (ERM)
  c.num_steps = 1000         # members' training steps
  c.batch_size = 32          # per training domain per step
  c.optimizer = "adam"
  c.learning_rate = 1e-3
  c.wise_alpha = 0.5         # WiSE-FT: (1 - a) pre-trained + a soup
  c.eval_batch_size = 1024
  c.seed = 0
  # python -m experiments.sweep: the grid once per seed.
  c.sweep = ml_collections.ConfigDict({"seeds": "0,1,2"})
  if arg == "smoke":
    c.model = "mlp_tiny"
    c.num_members = 2
    c.member_inits = ("shared", "independent")
    c.regularizers = ("ambiguity",)
    c.pretrain_steps, c.num_steps = 2, 3
    c.batch_size, c.eval_batch_size = 4, 256
    c.diversity.dverge.num_steps = 1
    c.sweep.seeds = "0,1"
  elif arg:
    raise ValueError(f"configs/ensemble.py: unknown preset {arg!r}; "
                     "valid: 'smoke'")
  return c

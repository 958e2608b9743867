"""Rotated sklearn digits (8x8), leave-one-domain-out: a seconds-long check.

Command (offline, CPU)::

  python -m experiments.train --config configs/digits.py

sklearn's 1,797 8x8 digits rotated like RotatedMNIST (one rotation per
domain), each domain held out in turn.

Model: an MLP (128), 1,000 steps of 32 digits per training domain.

Expected runtime: 1 min 26 s wall (27 s of CPU time) on 2 CPU cores shared
with other jobs, so pessimistic.
Expected accuracy (ERM, seed 0, measured): 0: 71.2, 15: 87.1, 30: 87.1,
45: 88.8, 60: 87.5, 75: 69.6, average 81.9 (the extreme angles hardest, as on
RotatedMNIST).

Sweep, the default grid of ``config.sweep`` (six algorithms, one seed, the
default hyperparameters), two selection methods::

  python -m experiments.sweep --config configs/digits.py \\
      --config.selection=training_domain,test_domain

Expected runtime: 7 min 45 s wall (163 s of CPU time) on 2 CPU cores shared
with other jobs, so pessimistic.
Expected accuracy (measured, seed 0, training-domain validation): averages
ERM 81.9, SAM 81.7, IRM 77.8, V-REx 82.4, CORAL 81.8, Fishr 81.9 (its
1,500-step warm-up, penalty weight 0, outlasts the 1,000 steps: it is ERM
here); test-domain validation (oracle): 81.9 / 81.6 / 76.2 / 82.4 / 81.8 /
81.9. Bigger grids: ``--config.sweep.n_hparams=20 --config.sweep.seeds=0,1,2``
(DomainBed's 20 random trials x 3 seeds; hours on CPU).

Presets: ``configs/digits.py:smoke`` (tests).
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.name = "digits"
  c.dataset = "digits_rotated"
  c.model = "mlp_small"
  c.batch_size = 32
  c.num_steps = 1000
  c.eval_every = 200
  c.log_every = 50
  c.checkpoint_every = 500
  if arg == "smoke":
    c = common.smoke(c)
  elif arg:
    raise ValueError(f"configs/digits.py: unknown preset {arg!r}; "
                     "valid: 'smoke'")
  return c

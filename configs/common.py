"""Shared defaults for every config (DomainBed's MNIST hyperparameters).

Each config module builds on ``base_config()`` and applies ``smoke()`` for its
``:smoke`` preset. Algorithm hyperparameters live flat in ``config.hparams``
(one sub-dict per algorithm, as DomainBed's ``hparams_registry``) so any of
them can be overridden from the command line, e.g.
``--config.hparams.sam.rho=0.1``.
"""

from __future__ import annotations

import ml_collections


def default_hparams() -> ml_collections.ConfigDict:
  """Hyperparameters of every algorithm in ``experiments.algorithms``.

  One sub-dict per algorithm; each key is the keyword of the rule factory
  (``diversity_jax.transforms``) or of the penalty that takes it, so
  ``--config.hparams.sam.rho=0.1`` is ``transforms.sam(rho=0.1)``. A
  penalty's ``weight`` and ``anneal_steps`` are its loss weight and warm-up.
  """
  d = lambda **kw: ml_collections.ConfigDict(kw)
  h = ml_collections.ConfigDict()
  h.erm = d()
  h.sam = d(rho=0.05)                           # Foret et al. 2021
  # GSAM (Zhuang et al. 2022) with a constant learning rate: rho_t = rho_max
  # (SAM's 0.05); alpha is the factory's default.
  h.gsam = d(rho_max=0.05, rho_min=0.05, alpha=0.6)
  # The rules' own defaults in diversity_jax.transforms (UDIM: Shin et al.
  # 2024; SAF/MESA: Du et al. 2022; Hessian alignment: Hemati et al. 2023).
  h.udim = d(rho=0.05, input_rho=10.0, inconsistency_weight=1.0)
  h.saf = d(lam=0.16, temperature=5.0)
  h.mesa = d(lam=0.3, decay=0.9998)
  h.gnp = d(lam=0.08)          # Zhao et al. 2022 recipes (zhaoyang-0204/gnp)
  # Hemati et al. 2023, authors' hparams_registry: penalty_alpha (Hessian
  # term; HGP 1e-4, Hutchinson 1e-3) and penalty_beta (gradient term).
  h.hgp = d(hessian_weight=1e-4, grad_weight=5e-3)
  h.hutchinson = d(hessian_weight=1e-3, grad_weight=5e-3, num_probes=10)
  # DomainBed defaults (hparams_registry.py).
  h.irm = d(weight=1e2, anneal_steps=500)
  h.vrex = d(weight=1e1, anneal_steps=500)
  h.coral = d(weight=1.0)
  # Fishr: ema is the EMA of the per-domain gradient variances.
  h.fishr = d(weight=1e3, anneal_steps=1500, ema=0.95)
  return h


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all configs; see each config for its dataset/model."""
  c = ml_collections.ConfigDict()
  c.task = "dg"              # the study: experiments/studies/<task>.py
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
  # A SAM-family rule (sam, gsam, gnp) every k steps, LookSAM's reuse of its
  # correction in between ('looksam', weight alpha) or the plain gradient
  # ('gradient'); k = 1: every step (diversity_jax.transforms.every_k_steps).
  c.every_k = ml_collections.ConfigDict(
      {"k": 1, "between": "looksam", "alpha": 0.7})
  # Model selection, one results table each (DomainBed model_selection.py):
  # 'training_domain' (validation on the training domains' held-out 20%),
  # 'test_domain' (oracle: the test domain's held-out 20%, last step),
  # 'leave_one_domain_out' (cross-validation; trains one more model per
  # other domain for every held-out domain). Comma-separated for several.
  c.selection = "training_domain"
  # experiments.sweep's grid: algorithms x hyperparameter trials x seeds
  # (trial 0: the defaults above; trials 1..n_hparams-1: DomainBed's random
  # search, experiments/hparams_search.py).
  c.sweep = ml_collections.ConfigDict({
      "algorithms": "erm,sam,irm,vrex,coral,fishr",
      "n_hparams": 1, "seeds": "0"})
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

"""ColoredMNIST, leave-one-domain-out (DomainBed protocol).

Command (offline, CPU)::

  python -m experiments.train --config configs/colored_mnist.py
  python -m experiments.sweep --config configs/colored_mnist.py \\
      --algorithms=erm,irm,vrex,fishr --seeds=0,1,2

Three environments with color-label correlation flipped with probability
0.1, 0.2 and 0.9 and 25% label noise (Arjovsky et al. 2019, as built in
DomainBed). Binary labels, so chance is 50%; a model that uses the color
reaches ~90% / 80% on the first two environments and ~10% on the third,
which is what ERM does (DomainBed: 71.7 / 72.9 / 10.0, avg 51.5).

Model: an MLP (256-256), 800 steps of 64 examples per training environment
(DomainBed: its MNIST ConvNet for 5,000 steps; ``--config.model=mnist_cnn
--config.num_steps=5000`` for that, slow on CPU).

Expected runtime: 2 min 15 s wall (33 s of CPU time) on 2 CPU cores shared
with other jobs (load ~13), so pessimistic; the first run also builds the
dataset (seconds).
Expected accuracy (ERM, seed 0, measured): +90% 60.7, +80% 66.0, -90% 25.4,
average 50.7 -- the qualitative DomainBed picture: the environment whose color
correlation is reversed is far below chance.

Sweep (``--algorithms=erm,irm,vrex,fishr --seeds=0``, measured): -90%
environment ERM 25.4, IRM 18.6, V-REx 25.7, Fishr 27.9; averages 50.7 / 46.8
/ 50.0 / 51.0 (DomainBed: every algorithm near 50-52 average, ~10 on -90%).
IRM and V-REx re-measured with DomainBed's Adam reset at the end of their
500-step warm-up (IRM +90% / +80%: 55.7 / 66.1; V-REx 60.6 / 63.6); Fishr's
warm-up (1,500 steps) outlasts the 800-step default, so its run is
unaffected by the reset and the EMA.

The three model selection methods (DomainBed's), one table each::

  python -m experiments.train --config configs/colored_mnist.py \\
      --config.selection=training_domain,test_domain,leave_one_domain_out

Expected runtime: 4 min 36 s wall (72 s of CPU time) on 2 shared CPU cores
(3 runs plus 6 cross-validation runs, each holding out two environments).
Expected accuracy (ERM, seed 0, measured): training-domain validation 60.7 /
66.0 / 25.4, average 50.7; test-domain validation (oracle, last step) 58.7 /
62.8 / 29.3, average 50.3; leave-one-domain-out cross-validation 50.4 / 59.7
/ 26.9, average 45.7 (its validation models train on one environment only).

DomainBed's own setting (70,000 digits; needs internet once and TensorFlow
to prepare TFDS ``mnist``, then cached; a GPU is advisable)::

  python -m experiments.train --config configs/colored_mnist.py \\
    --config.dataset=colored_mnist_full --config.name=colored_mnist_full \\
    --config.download=True --config.model=mnist_cnn --config.num_steps=5000

Presets: ``configs/colored_mnist.py:smoke`` (tests).
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.name = "colored_mnist"
  c.dataset = "colored_mnist"
  c.model = "mlp"
  c.batch_size = 64
  c.num_steps = 800
  c.eval_every = 100
  c.log_every = 50
  c.checkpoint_every = 400
  if arg == "smoke":
    c = common.smoke(c)
  elif arg:
    raise ValueError(f"configs/colored_mnist.py: unknown preset {arg!r}; "
                     "valid: 'smoke'")
  return c

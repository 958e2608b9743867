"""Validation of an LM config (``configs/lm.py``): every error names the field.

Runs before any data is built or anything is compiled; raises
``experiments.config_validation.ConfigError`` (one line, ``config.<field>:
...``), which ``python -m experiments.train`` prints and exits with code 2.
"""

from __future__ import annotations

import numbers

import jax

from diversity_jax.data import _text_tokenizer
from diversity_jax.kernels.linear_cross_entropy import IMPLEMENTATIONS
from experiments import config_validation as cv
from experiments.lm import head as head_lib
from experiments.lm import selection as selection_lib
from experiments.models import transformer

OPTIMIZERS = ("adamw", "adam", "sgd")
DTYPES = ("float32", "bfloat16")
_fail = cv.fail
_check_int = cv.check_int
_check_float = cv.check_float

REQUIRED = ("task", "name", "dataset", "data_dir", "download", "text_key",
            "train_split", "validation_split", "max_chars",
            "validation_fraction", "vocab_size", "seq_len", "model", "lm_head",
            "head", "mesh", "selection", "optimizer", "learning_rate", "warmup_steps",
            "weight_decay", "grad_clip", "batch_size", "num_steps",
            "eval_every", "eval_batch_size", "log_every", "checkpoint_every",
            "keep_checkpoints", "seed", "progress_bar")
MODEL_FIELDS = ("dim", "depth", "heads", "mlp_ratio", "positions",
                "tie_embeddings", "dtype")
SELECTION_FIELDS = ("method", "candidates", "alpha", "memory_size")
HEAD_FIELDS = ("implementation", "z_loss", "label_smoothing", "softcap",
               "ignore_padding", "fused_backward", "filter_eps")


def _check_bool(config, field: str, prefix: str = "") -> None:
  if not isinstance(config[field], bool):
    _fail(prefix + field, f"must be True or False, got {config[field]!r}")


def _check_str(config, field: str, prefix: str = "") -> None:
  if not isinstance(config[field], str) or not config[field]:
    _fail(prefix + field, f"must be a non-empty string, got {config[field]!r}")


def _check_choice(value, choices, field: str) -> None:
  if value not in choices:
    _fail(field, f"unknown value {value!r}; valid choices: {list(choices)}")


def _require(config, fields, prefix: str = "") -> None:
  for field in fields:
    if field not in config:
      _fail(prefix + field, "missing; start from configs/lm.py:get_config()")


def mesh_shape(config) -> tuple:
  """``(data, model)`` with ``mesh.data = 0`` resolved to the devices left."""
  model = config.mesh.model
  return (config.mesh.data or max(1, jax.device_count() // model), model)


def filter_eps(value):
  """``config.head.filter_eps`` as the kernel's argument."""
  return None if value == "none" else value


def _check_model(config) -> None:
  m = config.model
  _require(m, MODEL_FIELDS, "model.")
  for field in ("dim", "depth", "heads", "mlp_ratio"):
    _check_int(m, field, 1, "model.")
  if m.dim % m.heads:
    _fail("model.heads", f"must divide model.dim={m.dim}, got {m.heads}")
  _check_choice(m.positions, transformer.POSITIONS, "model.positions")
  if m.positions == "rotary" and (m.dim // m.heads) % 2:
    _fail("model.heads", f"rotary positions need an even head width; "
          f"model.dim / model.heads = {m.dim // m.heads}")
  _check_bool(m, "tie_embeddings", "model.")
  _check_choice(m.dtype, DTYPES, "model.dtype")


def _check_head(config) -> None:
  h = config.head
  _require(h, HEAD_FIELDS, "head.")
  _check_choice(config.lm_head, head_lib.LM_HEADS, "lm_head")
  _check_choice(h.implementation, ("",) + tuple(IMPLEMENTATIONS),
                "head.implementation")
  _check_float(h, "z_loss", positive=False, prefix="head.")
  _check_float(h, "softcap", positive=False, prefix="head.")
  _check_float(h, "label_smoothing", positive=False, prefix="head.")
  if not h.label_smoothing < 1:
    _fail("head.label_smoothing", f"must lie in [0, 1), got "
          f"{h.label_smoothing}")
  _check_bool(h, "ignore_padding", "head.")
  if h.fused_backward is not None:
    _check_bool(h, "fused_backward", "head.")
  eps = h.filter_eps
  if eps not in ("auto", "none") and (
      isinstance(eps, bool) or not isinstance(eps, numbers.Real) or eps < 0):
    _fail("head.filter_eps", f"must be 'auto', 'none' or a number >= 0, got "
          f"{eps!r}")


def _check_mesh(config) -> None:
  _require(config.mesh, ("data", "model"), "mesh.")
  _check_int(config.mesh, "data", 0, "mesh.")
  _check_int(config.mesh, "model", 1, "mesh.")
  data, model = mesh_shape(config)
  if data * model > jax.device_count():
    _fail("mesh", f"asks for {data} x {model} = {data * model} devices but "
          f"only {jax.device_count()} exist")
  if config.vocab_size % model:
    _fail("vocab_size", f"must be a multiple of mesh.model={model} (the "
          f"vocabulary is split over it), got {config.vocab_size}")
  if model > 1:
    if config.head.implementation not in ("", "xla_chunked"):
      _fail("head.implementation", f"the vocab-parallel head (mesh.model="
            f"{model}) runs implementation 'xla_chunked' only, got "
            f"{config.head.implementation!r}")
    if config.head.fused_backward:
      _fail("head.fused_backward", f"is not supported with the "
            f"vocab-parallel head (mesh.model={model})")
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % data:
      _fail(field, f"must be a multiple of mesh.data={data}, got "
            f"{config[field]}")


def _check_selection(config) -> None:
  s = config.selection
  _require(s, SELECTION_FIELDS, "selection.")
  _check_choice(s.method, selection_lib.METHODS, "selection.method")
  _check_int(s, "candidates", 1, "selection.")
  _check_int(s, "memory_size", 1, "selection.")
  _check_float(s, "alpha", positive=False, prefix="selection.")
  if s.alpha < 0:
    _fail("selection.alpha", f"must be >= 0, got {s.alpha}")
  if s.method == "none":
    return
  if s.candidates <= config.batch_size:
    _fail("selection.candidates", f"must exceed batch_size="
          f"{config.batch_size} (the selected sub-batch), got {s.candidates}")
  if s.memory_size < config.batch_size:
    _fail("selection.memory_size", f"must be >= batch_size="
          f"{config.batch_size} (each step remembers its selection), got "
          f"{s.memory_size}")
  data, _ = mesh_shape(config)
  if s.candidates % data:
    _fail("selection.candidates", f"must be a multiple of mesh.data={data}, "
          f"got {s.candidates}")


def validate(config) -> None:
  """Checks every field that can be checked without data; raises ConfigError."""
  _require(config, REQUIRED)
  if config.task != "lm":
    _fail("task", f"must be 'lm' for an LM config, got {config.task!r}")
  _check_str(config, "name")
  ds = config.dataset
  if not isinstance(ds, str) or not (ds == "stdlib" or (
      ds.startswith("tfds:") and len(ds) > len("tfds:"))):
    _fail("dataset", f"unknown corpus {ds!r}; valid choices: ['stdlib', "
          "'tfds:<name of a TFDS text dataset>']")
  for field in ("text_key", "train_split", "validation_split"):
    _check_str(config, field)
  if not isinstance(config.data_dir, str):
    _fail("data_dir", f"must be a path string, got {config.data_dir!r}")
  for field in ("download", "progress_bar"):
    _check_bool(config, field)
  _check_int(config, "max_chars", 0)
  vf = config.validation_fraction
  if isinstance(vf, bool) or not isinstance(vf, numbers.Real) or not 0 < vf < 1:
    _fail("validation_fraction", f"must lie in (0, 1), got {vf!r}")
  _check_int(config, "vocab_size", _text_tokenizer.MIN_VOCAB_SIZE)
  _check_int(config, "seq_len", 1)
  _check_model(config)
  _check_head(config)
  _check_choice(config.optimizer, OPTIMIZERS, "optimizer")
  _check_float(config, "learning_rate", positive=True)
  for field in ("weight_decay", "grad_clip"):
    _check_float(config, field, positive=False)
  for field in ("batch_size", "num_steps", "eval_every", "eval_batch_size",
                "log_every", "checkpoint_every", "keep_checkpoints"):
    _check_int(config, field, 1)
  for field in ("warmup_steps", "seed"):
    _check_int(config, field, 0)
  _check_mesh(config)
  _check_selection(config)

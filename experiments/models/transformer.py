"""Decoder-only transformer language model (pre-norm, causal attention).

``DecoderLM`` maps token ids ``(B, T)`` to the final hidden states ``(B, T,
D)`` and the output-embedding matrix; the logits ``h @ W`` are left to the
loss (``diversity_jax.kernels.linear_cross_entropy`` never builds them).
``tie_embeddings=True`` reuses the input embedding ``(V, D)`` (layout
``'vd'``); otherwise the head is a ``(D, V)`` matrix stored like a flax
``nn.Dense`` kernel (``params['head']['kernel']``, layout ``'dv'``).

Vocab parallelism: with ``vocab_axis_name`` set, the module runs inside
``jax.shard_map`` and holds the local shard of the vocabulary
(``vocab_size`` = the local size ``V / axis_size``, classes ``[r V_local,
(r + 1) V_local)`` on shard ``r``): the embedding lookup takes the rows this
shard owns and ``psum`` s over the axis (Megatron-LM's parallel input
embedding), and the returned head matrix is the local shard.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

POSITIONS = ("rotary", "learned")


def rotary(x: jax.Array, base: float = 10000.0) -> jax.Array:
  r"""Rotary position embedding of ``x`` ``(B, T, H, Dh)`` (``Dh`` even).

  Channel pairs ``(x_i, x_{i + Dh/2})`` of position ``t`` are rotated by the
  angle ``t \theta_i``, ``\theta_i = base^{-2 i / Dh}``, so that ``q_s . k_t``
  depends on ``t - s`` only.

  Example:
    >>> x = jnp.ones((1, 4, 2, 8))
    >>> rotary(x).shape
    (1, 4, 2, 8)

  References:
    Su et al., "RoFormer: Enhanced Transformer with Rotary Position
    Embedding", arXiv:2104.09864, Eq. 34 (the half-split pairing of
    GPT-NeoX, github.com/EleutherAI/gpt-neox).
  """
  t, dh = x.shape[1], x.shape[-1]
  half = dh // 2
  inv = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  ang = jnp.arange(t, dtype=jnp.float32)[:, None] * inv[None, :]   # (T, half)
  cos = jnp.cos(ang)[None, :, None, :].astype(x.dtype)
  sin = jnp.sin(ang)[None, :, None, :].astype(x.dtype)
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention (``jax.nn.dot_product_attention``)."""
  dim: int
  heads: int
  positions: str = "rotary"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, _ = x.shape
    dh = self.dim // self.heads
    qkv = nn.Dense(3 * self.dim, use_bias=False, dtype=self.dtype,
                   name="qkv")(x)
    q, k, v = jnp.split(qkv.reshape(b, t, 3 * self.heads, dh), 3, axis=2)
    if self.positions == "rotary":
      q, k = rotary(q), rotary(k)
    y = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    return nn.Dense(self.dim, use_bias=False, dtype=self.dtype,
                    name="out")(y.reshape(b, t, self.dim))


class Block(nn.Module):
  """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""
  dim: int
  heads: int
  mlp_ratio: int = 4
  positions: str = "rotary"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x + CausalSelfAttention(self.dim, self.heads, self.positions,
                                self.dtype, name="attn")(
                                    nn.RMSNorm(dtype=self.dtype, name="norm1")(x))
    y = nn.RMSNorm(dtype=self.dtype, name="norm2")(x)
    y = nn.Dense(self.mlp_ratio * self.dim, dtype=self.dtype, name="fc1")(y)
    y = nn.Dense(self.dim, dtype=self.dtype, name="fc2")(nn.gelu(y))
    return x + y


class _Head(nn.Module):
  """The untied output matrix, ``(D, V)`` like ``nn.Dense``'s kernel."""
  dim: int
  vocab_size: int

  @nn.compact
  def __call__(self):
    return self.param("kernel", nn.initializers.lecun_normal(),
                      (self.dim, self.vocab_size))


class DecoderLM(nn.Module):
  """GPT-style decoder: embeddings, ``depth`` pre-norm blocks, final RMSNorm.

  ``apply({'params': p}, tokens)`` returns ``(h, w)``: the final hidden states
  ``(B, T, D)`` (in ``dtype``) and the output matrix ``w``, ``(V, D)`` when
  ``tie_embeddings`` else ``(D, V)`` (``head_layout``), in f32. The logits
  are ``h @ w.T`` (tied) or ``h @ w`` (untied).

  Attributes:
    vocab_size: vocabulary size ``V`` (the local shard's size with
      ``vocab_axis_name``).
    dim, depth, heads, mlp_ratio: width, blocks, attention heads, MLP width
      multiple.
    max_len: longest sequence (learned positions only).
    positions: ``'rotary'`` (RoPE on queries and keys) or ``'learned'``.
    tie_embeddings: output matrix = input embedding.
    dtype: computation dtype (params stay f32).
    vocab_axis_name: mesh axis the vocabulary is split over (inside
      ``jax.shard_map``), or None.

  Example:
    >>> model = DecoderLM(vocab_size=64, dim=16, depth=1, heads=2)
    >>> tokens = jnp.zeros((2, 8), jnp.int32)
    >>> params = model.init(jax.random.key(0), tokens)['params']
    >>> h, w = model.apply({'params': params}, tokens)
    >>> h.shape, w.shape
    ((2, 8, 16), (64, 16))

  References:
    Radford et al., "Language Models are Unsupervised Multitask Learners",
    2019 (GPT-2: pre-norm decoder, tied embeddings); Zhang & Sennrich, "Root
    Mean Square Layer Normalization", NeurIPS 2019; Su et al. 2021 (RoPE);
    Shoeybi et al., "Megatron-LM", arXiv:1909.08053, Sec. 3 (parallel
    embedding).
  """
  vocab_size: int
  dim: int = 256
  depth: int = 4
  heads: int = 4
  mlp_ratio: int = 4
  max_len: int = 2048
  positions: str = "rotary"
  tie_embeddings: bool = True
  dtype: Any = jnp.float32
  vocab_axis_name: Optional[str] = None

  @property
  def head_layout(self) -> str:
    """``'vd'`` (tied: the embedding) or ``'dv'`` (untied: a Dense kernel)."""
    return "vd" if self.tie_embeddings else "dv"

  def _embed(self, table, tokens):
    if self.vocab_axis_name is None:
      return jnp.take(table, tokens, axis=0)
    start = jax.lax.axis_index(self.vocab_axis_name) * self.vocab_size
    local = tokens - start
    here = (local >= 0) & (local < self.vocab_size)
    rows = jnp.take(table, jnp.where(here, local, 0), axis=0)
    return jax.lax.psum(jnp.where(here[..., None], rows, 0.0),
                        self.vocab_axis_name)

  @nn.compact
  def __call__(self, tokens):
    table = self.param("embedding", nn.initializers.normal(0.02),
                       (self.vocab_size, self.dim))
    x = self._embed(table, tokens)
    if self.positions == "learned":
      pos = self.param("pos_embedding", nn.initializers.normal(0.02),
                       (self.max_len, self.dim))
      x = x + pos[None, :tokens.shape[1]]
    x = x.astype(self.dtype)
    for i in range(self.depth):
      x = Block(self.dim, self.heads, self.mlp_ratio, self.positions,
                self.dtype, name=f"block{i}")(x)
    h = nn.RMSNorm(dtype=self.dtype, name="final_norm")(x)
    w = table if self.tie_embeddings else _Head(self.dim, self.vocab_size,
                                                name="head")()
    return h, w

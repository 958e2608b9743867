"""Datasets and the multi-domain input pipeline (the only module that uses TFDS).

Import explicitly (``from diversity_jax import data``); ``import diversity_jax``
does not import it, and TFDS itself is imported lazily on first use.

* :func:`load`: ``'mock'``, ``'rotated_mnist'``, ``'colored_mnist'``,
  ``'digits_rotated'`` (offline TFDS builders), ``'rotated_mnist_full'``,
  ``'colored_mnist_full'`` (opt-in: from TFDS ``mnist``, 70,000 digits) or
  ``'tfds:<name>'``.
* :func:`split_holdout`: DomainBed's deterministic in/out split
  (:func:`holdout_indices`: the same split as indices, for streamed domains).
* :class:`ArraySource`, :class:`SubsetSource`: random-access domain sources
  (``Dataset.source(domain)``; large ``'tfds:'`` datasets stream from disk).
* :class:`MultiDomainBatches`: one batch per domain per step, pure in (seed, step).
* :func:`shard_batch`: place a batch on a ``Mesh``, split over the batch axis.
* :func:`load_text`: a tokenized language-modelling corpus (:class:`TextDataset`;
  ``'stdlib'``: the Python standard library's source, offline).
"""

from diversity_jax.data._datasets import Dataset
from diversity_jax.data._sources import ArraySource
from diversity_jax.data._sources import SubsetSource
from diversity_jax.data._pipeline import holdout_indices
from diversity_jax.data._datasets import default_data_dir
from diversity_jax.data._datasets import load
from diversity_jax.data._text_datasets import TextDataset
from diversity_jax.data._text_datasets import load_text
from diversity_jax.data._pipeline import MultiDomainBatches
from diversity_jax.data._pipeline import shard_batch
from diversity_jax.data._pipeline import split_holdout

__all__ = [
    "ArraySource",
    "Dataset",
    "SubsetSource",
    "TextDataset",
    "holdout_indices",
    "MultiDomainBatches",
    "default_data_dir",
    "load",
    "load_text",
    "shard_batch",
    "split_holdout",
]

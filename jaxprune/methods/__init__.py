"""Pruning methods by name, with their papers' defaults.

    method = jaxprune.methods.get("pins", sparsity=0.9)

- ``magnitude``: |W| per matrix, sticky masks (Zhu & Gupta 2017).
- ``taylor``: EMA of |w g|, one global ranking (Molchanov et al. 2019).
- ``platon``: |w g| EMA times its uncertainty, kernels and biases, global (Zhang et al. 2022).
- ``pins``: |-w g + lr g^2| EMA times uncertainty, global, with self-regularization from the
  latest student checkpoint (Ren & Zhu 2023).
- ``obert``: the optimal BERT surgeon's block empirical-Fisher saliency, global, with the
  surgeon update of the kept weights at each mask update (Kurtic et al. 2022).
- ``sparsebert``: |W| per matrix over the whole run, distilling a fine-tuned dense teacher
  with attention-score and hidden-state MSE and soft CE (Xu et al. 2021).
- ``sdp``: |W| per matrix with a cross-correlation loss to the unpruned network (O'Neill et
  al. 2022, reconstructed: the paper's text was not available).
- ``movement``, ``soft_movement``: learned scores, straight-through top-k or sigmoid
  threshold with its L1 regulariser (Sanh et al. 2020).
- ``smp``, ``smp_s``, ``smp_global``: frozen weights, learned scores only (Jiang et al. 2023).

Each preset's docstring (in :mod:`jaxprune.methods.scored` and
:mod:`jaxprune.methods.learned`) says where the code and the paper differ.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune.methods import learned, scored
from jaxprune.methods.base import Method, Run
from jaxprune.methods.learned import ScoreMethod
from jaxprune.methods.scored import CriterionMethod


def _presets() -> dict[str, Any]:
    return {**scored.PRESETS, **learned.PRESETS}


def names() -> list[str]:
    return sorted(_presets())


def get(name: str, **overrides: Any) -> Method:
    """The preset ``name`` with ``overrides`` applied (any of its fields).

    Raises:
      ValueError: unknown name (the known ones are listed) or unknown field.
    """
    table = _presets()
    if name not in table:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(table)}")
    preset = table[name]
    fields = {f.name for f in dataclasses.fields(preset)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"{name} has no option(s) {unknown}; options: {sorted(fields)}")
    return dataclasses.replace(preset, **overrides)


__all__ = ["CriterionMethod", "Method", "Run", "ScoreMethod", "get", "names"]

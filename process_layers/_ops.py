"""Piecewise operators with a fixed choice of (sub)gradient at ties.

``torch.minimum`` splits the gradient in half at a tie; these pick one branch, the same
one the fused kernel (:mod:`process_layers.fused`) differentiates, so both paths give
identical gradients everywhere, kinks included.
"""

from __future__ import annotations

from torch import Tensor, where


def minimum(a: Tensor, b: Tensor | float) -> Tensor:
    """min(a, b); at a tie the value and gradient are taken from ``a``."""
    return where(a <= b, a, b)


def maximum(a: Tensor, b: Tensor | float) -> Tensor:
    """max(a, b); at a tie the value and gradient are taken from ``a``."""
    return where(a >= b, a, b)

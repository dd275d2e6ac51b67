"""Guidance for the CVAEs' decoders: the VAE analogue of classifier-free guidance.

Training with whole-condition dropout (``cond_null_p``: that share of a batch's rows get the
null condition) teaches one decoder two things: p(x|z,c) and p(x|z,null). At sampling time the
decoder's pre-activation outputs (the Bernoulli logits; for the §2.3 model, the input of its
final tanh) are pushed away from the unconditional ones:

    l_w(z, c) = l(z, c) + w * (l(z, c) - l(z, null))

w = 0 is the plain decoder (no second pass is made). Larger w buys fidelity to the condition
(judge accuracy) with coverage (diversity), like the truncation trick; the frontier of the
Fashion-MNIST evaluations measures the trade (pipeline/frontier.py, docs/guidance.md).

The null condition is the zero vector for every conditioning kind: for one-hot labels it is
no class at all; for caption embeddings (MiniLM, CLIP and T5 vectors, none of them zero: the
MiniLM and CLIP ones are unit-norm) it is a point no caption maps to. A learned null vector
would need a new parameter in every model and a change of its config; zeros need neither,
and a model trained with ``cond_null_p: 0`` (the paper's) is exactly the paper's model.
"""

from __future__ import annotations

import torch
from torch import nn


def null_condition(c: torch.Tensor) -> torch.Tensor:
    """The null condition of a batch of conditions: zeros of the same shape."""
    return torch.zeros_like(c)


def drop_conditions(c: torch.Tensor, p: float) -> torch.Tensor:
    """``c`` with each row replaced by the null condition with probability ``p``, drawn from
    the global torch generator (saved in training's resume state). ``p == 0`` draws nothing,
    so a seed gives bit-identical weights with and without this call."""
    if p == 0:
        return c
    if not 0 < p < 1:
        raise ValueError(f"cond_null_p {p} must be in [0, 1)")
    keep = torch.rand(len(c), device=c.device) >= p
    return torch.where(keep.reshape(-1, *[1] * (c.dim() - 1)), c, null_condition(c))


def guided_logits(model: nn.Module, z: torch.Tensor, c: torch.Tensor, w: float) -> torch.Tensor:
    """l(z, c) + w (l(z, c) - l(z, null)) of ``model.decode_logits``; w = 0: l(z, c)."""
    logits = model.decode_logits(z, c)
    if w == 0:
        return logits
    unconditional = model.decode_logits(z, null_condition(c))
    return logits + w * (logits - unconditional)


def guided_decode(model: nn.Module, z: torch.Tensor, c: torch.Tensor, w: float) -> torch.Tensor:
    """Images of ``z`` under ``c`` with guidance ``w``; w = 0 is ``model.decode`` itself."""
    if w == 0:
        return model.decode(z, c)
    return model.images_from_logits(guided_logits(model, z, c, w))

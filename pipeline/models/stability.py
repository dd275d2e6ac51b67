"""Why the paper's COCO models diverge at their own learning rates, and the remedies used.

Adam's first updates move every weight by about ``lr`` whatever its gradient's size. A linear
layer with fan-in N whose inputs share a sign (post-LeakyReLU features mostly do) therefore
shifts each output by about ``lr * N * mean|input|`` in one step. The paper's models have two
such layers: Model 1's image FC (14x14x512 = 100,352 inputs at 224) and Model 2's mu and
log-variance heads (56x56x128 = 401,408 inputs). At lr 5e-3 one step moved Model 1's
log-variance from 0.2 to 62, so exp(log-variance) made the KL 1e26, then inf, then NaN.

The remedies, each a param of its model (paper values: the remedy off):

- ``feature_norm`` (Model 1): LayerNorm after the wide image FC (Ba et al., 2016), so
  whatever scale its weights reach, the encoder MLP sees unit-RMS features.
  Model 2's wide layers are its mu and log-variance heads themselves, so there is no hidden
  feature to normalise; a LayerNorm on the heads' 401k inputs made it worse (its zero-mean,
  unit-variance inputs are larger than the raw features: KL 13,000 per image by step 10).
- ``logvar_bound``: the log-variance passes through a smooth two-sided clamp (the bounded
  variance of Chua et al., 2018): close to the identity well inside [-b, b], flat outside,
  so exp() can never overflow and a jump of the raw value cannot make the KL explode.
- ``warmup_steps`` (the training loop): a linear learning-rate warmup (Goyal et al., 2017)
  for the first optimizer steps, while Adam's second-moment estimates are still poor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_bound(x: torch.Tensor, bound: float | None) -> torch.Tensor:
    """Smoothly clamp ``x`` to [-bound, bound]; ``None``: unchanged.

    ``hi - softplus(hi - x)`` caps from above and ``lo + softplus(. - lo)`` from below; both
    are within 0.01 of the identity for |x| <= bound - 5 and have gradient in (0, 1).
    """
    if bound is None:
        return x
    x = bound - F.softplus(bound - x)
    return -bound + F.softplus(x + bound)

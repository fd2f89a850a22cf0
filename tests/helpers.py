"""Helpers shared by the transform, normalisation and flow tests."""

import math

import torch


def perturb_(module, gain=1.5, seed=0):
    """Redraws every parameter so the map is far from the builders' near-identity start:
    biases from N(0, 0.5^2), weights from N(0, gain^2 / fan_in). Scaling by the fan-in
    keeps outputs O(1): with N(0, 0.5^2) weights a deep residual MADE can output scales
    of 1e-9, and an exactness check of 1e-10 then measures conditioning, not the code."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = 0.5 if p.dim() == 1 else gain / math.sqrt(p.shape[1])
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return module


def batch_jacobian(f, x):
    """``J[..., i, j] = d f(x)[..., i] / d x[..., j]`` for an ``f`` that treats batch rows
    independently (one backward pass per output coordinate)."""
    x = x.detach().clone().requires_grad_(True)
    y = f(x)
    rows = [torch.autograd.grad(y[..., i].sum(), x, retain_graph=True)[0] for i in range(y.shape[-1])]
    return torch.stack(rows, dim=-2)


def log_abs_det(jacobian):
    return torch.linalg.slogdet(jacobian)[1]

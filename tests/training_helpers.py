"""Helpers shared by the training test files (test_training*.py): toy data (noise, conditional
data), a fit without a progress bar, and a small learnable Gaussian."""

import math

import torch
from torch import nn

from flowkit import fit

def noise(num, dim=2, seed=0):
    return torch.randn(num, dim, generator=torch.Generator().manual_seed(seed))


def quiet_fit(model, train, valid=None, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("seed", 0)
    return fit(model, train, valid, **kwargs)


class LearnableGaussian(nn.Module):
    """A model with a log_prob but no MADE."""

    def __init__(self, dim=2):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))

    def log_prob(self, x):
        # written out (no torch.distributions argument checks): nan/inf data give a nan/inf loss
        return (-0.5 * (x - self.loc) ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)


def conditional_data(num, seed=0):
    """x = A c + small noise: x depends strongly on the context c."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(num, 2, generator=generator)
    x = context @ torch.tensor([[1.0, 0.5], [-0.5, 1.0]]) + 0.2 * torch.randn(num, 2, generator=generator)
    return x, context

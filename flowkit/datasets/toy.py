"""2-D toy densities made here, for plots."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit._validation import check_int

__all__ = ["TOY_2D", "toy_2d"]

TOY_2D = ("moons", "rings", "checkerboard", "gaussians")
"""The names [`toy_2d`][flowkit.datasets.toy_2d] accepts."""


def toy_2d(name: str, num_samples: int, seed: int = 0) -> Tensor:
    """Samples from a 2-D toy density: ``"moons"``, ``"rings"``, ``"checkerboard"`` or
    ``"gaussians"`` (eight Gaussians on a circle). Roughly centred, scale ~1-4.

    Args:
        name: One of [`TOY_2D`][flowkit.datasets.toy.TOY_2D].
        num_samples: The number of points.
        seed: Fixes the points.

    Examples:
        >>> toy_2d("moons", 5).shape
        torch.Size([5, 2])
    """
    if name not in TOY_2D:
        raise ValueError(f"name: expected one of {TOY_2D}, got {name!r}")
    check_int(num_samples, "num_samples")
    with torch.device("cpu"):  # data is made on the CPU, whatever torch's default device
        return _toy_2d(name, num_samples, torch.Generator().manual_seed(seed))


def _toy_2d(name: str, n: int, g: torch.Generator) -> Tensor:
    if name == "moons":
        t = math.pi * torch.rand(n, generator=g)
        upper = torch.rand(n, generator=g) < 0.5
        x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
        y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
        points = torch.stack([x - 0.5, y - 0.25], -1) * 2
        return points + 0.1 * torch.randn(n, 2, generator=g)
    if name == "rings":
        radius = 1.0 + torch.randint(0, 3, (n,), generator=g).float()
        angle = 2 * math.pi * torch.rand(n, generator=g)
        points = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        return points + 0.08 * torch.randn(n, 2, generator=g)
    if name == "checkerboard":
        x = 4 * torch.rand(n, generator=g) - 2
        y = torch.rand(n, generator=g) + torch.randint(0, 2, (n,), generator=g).float() * 2 - 2
        y = y + (torch.floor(x) % 2)
        return torch.stack([x, y], -1) * 2
    angle = 2 * math.pi * torch.randint(0, 8, (n,), generator=g).float() / 8
    centres = 3 * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centres + 0.3 * torch.randn(n, 2, generator=g)

"""Seeds to random generators, in one place.

Structure (orders, hidden degrees, permutations) and minibatch shuffling are drawn from
CPU generators, so they are the same on every machine and every device, and a model
trained on several processes gets the same masks on each of them.
"""

from __future__ import annotations

import torch

__all__ = ["make_generator"]


def make_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``seed``: an int seeds a new one, a generator is
    returned as it is, and ``None`` seeds a new one from torch's global generator (so
    ``torch.manual_seed`` fixes it too).

    Examples:
        >>> a, b = make_generator(3), make_generator(3)
        >>> torch.equal(torch.rand(2, generator=a), torch.rand(2, generator=b))
        True
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), device="cpu"))
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, a torch.Generator or None, got {type(seed).__name__}")
    return torch.Generator(device="cpu").manual_seed(seed)

r"""A generated density with an exact log-density: as many rows as wanted, in any dimension,
and the best NLL any model can reach on them (the density's own).

[`gaussian_mixture`][flowkit.datasets.gaussian_mixture] is a fixed random mixture of
correlated Gaussians,

\[
p(x) = \sum_{k=1}^{K} \pi_k \, \mathcal{N}(x; \mu_k, L_k L_k^\top),
\]

with means spread over a few units and covariances of varied shapes: multimodal and
correlated, so a flow has something to learn, and cheap to sample at a million rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch import distributions as D

from flowkit._validation import as_shape, check_int

__all__ = ["GaussianMixture", "gaussian_mixture"]


class GaussianMixture(D.MixtureSameFamily):
    """A mixture of multivariate normals whose ``sample`` draws each row from its own
    component only. (``MixtureSameFamily.sample`` draws every row from every component,
    and its covariance product broadcasts to ``rows x components x D x D`` numbers: 131 GB
    for a million rows of a 64-D mixture of 8.)"""

    def sample(self, sample_shape: int | Sequence[int] = torch.Size()) -> Tensor:
        """Rows of shape ``sample_shape + event shape``; ``sample_shape`` is an int or a shape."""
        sample_shape = as_shape(sample_shape)
        shape = sample_shape + self.batch_shape
        components = self.component_distribution
        with torch.no_grad():
            index = self.mixture_distribution.sample(sample_shape).reshape(-1)
            noise = torch.randn(len(index), *self.event_shape, dtype=components.loc.dtype, device=index.device)
            rows = torch.empty_like(noise)
            for k in range(components.loc.shape[-2]):
                chosen = index == k
                rows[chosen] = components.loc[k] + noise[chosen] @ components.scale_tril[k].T
        return rows.reshape(shape + self.event_shape)


def gaussian_mixture(dim: int, num_components: int = 8, seed: int = 0) -> GaussianMixture:
    """A random mixture of ``num_components`` correlated Gaussians in ``dim`` dimensions,
    fixed by ``seed``, as a torch distribution (``sample``, exact ``log_prob``) on the CPU.
    Sampling takes memory in proportion to the rows drawn, so a million rows are cheap.

    Examples:
        >>> target = gaussian_mixture(3, seed=0)
        >>> x = target.sample((4,))
        >>> x.shape, target.log_prob(x).shape
        (torch.Size([4, 3]), torch.Size([4]))
    """
    check_int(dim, "dim")
    check_int(num_components, "num_components")
    g = torch.Generator().manual_seed(seed)
    with torch.device("cpu"):  # made on the CPU, whatever torch's default device
        logits = torch.randn(num_components, generator=g)
        loc = 3.0 * torch.randn(num_components, dim, generator=g)
        # Lower-triangular factors: positive diagonals, small random correlations.
        diagonal = torch.exp(0.5 * torch.randn(num_components, dim, generator=g) - 0.5)
        lower = torch.tril(0.3 * torch.randn(num_components, dim, dim, generator=g), diagonal=-1)
        scale_tril = lower + torch.diag_embed(diagonal)
        components = D.MultivariateNormal(loc, scale_tril=scale_tril)
        return GaussianMixture(D.Categorical(logits=logits), components)

r"""Amortized flow posteriors for variational autoencoders (Kingma et al. 2016).

An encoder emits, for each data point, a Gaussian \(\mathcal{N}(\mu, \sigma^2)\) and a
context vector \(h\); the posterior is that Gaussian pushed through IAF steps that all read
\(h\):

\[
    z_0 = \mu + \sigma \odot \varepsilon, \qquad z_k = f_k(z_{k-1}; h).
\]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from flowkit.distributions.flows import Flow, iaf
from flowkit.infer.path_derivative import PathDerivativeFlow, inverse_with_fixed_parameters, standard_normal_log_prob
from flowkit.nn import MADEConfig
from flowkit.transforms import ElementwiseBijection

__all__ = ["AmortizedIAF"]


class AmortizedIAF(nn.Module):
    """Conditional IAF steps on top of an encoder's diagonal Gaussian.

    Calling it with the encoder's outputs gives the posterior as a Pyro distribution,
    for ``pyro.sample`` in a VAE guide (register it with ``pyro.module``).

    Args:
        latent_dim: The size of ``z``.
        context_dim: The size of the encoder's context vector ``h``.
        num_transforms: The number of IAF steps.
        hidden_dims: MADE widths.
        seed: Fixes masks and permutations.
        bijection: The elementwise map of every step, as in
            [`iaf`][flowkit.distributions.flows.iaf]; the default ``"gated"`` is the
            update Kingma et al. (2016) use, ``"spline"`` gives spline steps.
        conditioner: The options of every step's MADE, a [`MADEConfig`][flowkit.nn.MADEConfig].
        stick_the_landing: Return a [`PathDerivativeFlow`][flowkit.infer.path_derivative.PathDerivativeFlow],
            whose ``log_prob`` holds the encoder's outputs and the flow's parameters fixed:
            the path-derivative ELBO gradient (Roeder et al. 2017). ``False`` gives a plain
            ``TransformedDistribution``, whose ``log_prob`` is differentiable in everything
            (for importance-weighted bounds, or a fit of the posterior by likelihood).

    Examples:
        >>> import torch
        >>> posterior = AmortizedIAF(latent_dim=2, context_dim=3, num_transforms=2, hidden_dims=[8])
        >>> q = posterior(torch.zeros(5, 2), torch.ones(5, 2), torch.randn(5, 3))
        >>> z = q.rsample()
        >>> z.shape, q.log_prob(z).shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        num_transforms: int = 2,
        hidden_dims: Sequence[int] | None = None,
        seed: int | None = 0,
        *,
        bijection: ElementwiseBijection | str = "gated",
        conditioner: MADEConfig | None = None,
        stick_the_landing: bool = True,
    ):
        super().__init__()
        if not isinstance(stick_the_landing, bool):
            raise TypeError(f"stick_the_landing: expected a bool, got {type(stick_the_landing).__name__}")
        self.stick_the_landing = stick_the_landing
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 1:
            raise ValueError(f"context_dim: expected a positive int, got {context_dim!r}")
        self.flow = iaf(
            latent_dim, num_transforms, hidden_dims, context_dim=context_dim, bijection=bijection,
            conditioner=conditioner, seed=seed,
        )  # fmt: skip

    def forward(
        self, loc: Tensor, scale: Tensor, context: Tensor
    ) -> PathDerivativeFlow | dist.TransformedDistribution:
        """The posterior for the encoder outputs ``loc``, ``scale`` (``(..., D)``) and
        ``context`` (``(..., context_dim)``)."""
        for name, value in (("loc", loc), ("scale", scale)):
            if value.dim() == 0 or value.shape[-1] != self.flow.input_dim:
                raise ValueError(f"{name}: expected shape (..., {self.flow.input_dim}), got {tuple(value.shape)}")
        transforms = self.flow.conditioned_transforms(context)
        if not self.stick_the_landing:
            return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), transforms)
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape[:-1], context.shape[:-1])
        push = functools.partial(_push_through, transforms, loc, scale)
        fixed_log_prob = functools.partial(_fixed_parameter_log_prob, self.flow, loc.detach(), scale.detach(), context)
        return PathDerivativeFlow(push, fixed_log_prob, batch_shape, self.flow.input_dim, loc)


def _push_through(transforms: list, loc: Tensor, scale: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """``z = flow(loc + scale * noise)`` and its log-determinant, without Pyro's caches."""
    z, log_det = Flow._push(loc + scale * noise, transforms)
    return z, log_det + scale.log().sum(-1)


def _fixed_parameter_log_prob(flow: Flow, loc: Tensor, scale: Tensor, context: Tensor, z: Tensor) -> Tensor:
    """log q(z) through ``flow`` (detached, as ``context``) and the detached ``loc`` and ``scale``."""
    x0, log_det = inverse_with_fixed_parameters(flow, z, context)
    return standard_normal_log_prob((x0 - loc) / scale) - log_det - scale.log().sum(-1)

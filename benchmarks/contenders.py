"""The same affine autoregressive flow built with flowkit, Pyro, zuko and nflows.

Every contender stacks ``num_transforms`` affine autoregressive steps on a standard normal
base. Each step's conditioner is a MADE with the given hidden widths (ReLU, no direct
input-to-output connections), and the order of the inputs is reversed from one step to the
next. What each library does in its own way, and so differs:

* **flowkit**: ``flowkit.maf`` / ``flowkit.iaf``; reversals are ``Permute`` layers; the MAF
  scores data by ``x = (y - mu) * s`` and the IAF samples by ``y = mu + s * x``, each with
  ``s = softplus(u + c) + 1e-3`` (``c`` makes ``u = 0`` the identity); last MADE layer
  initialised near zero.
* **Pyro**: ``AffineAutoregressive(AutoRegressiveNN)``, used as is for IAF and inverted
  (``.inv``) for MAF; the reversals are the conditioners' own ``permutation`` (natural,
  reversed, natural, ...); scale ``exp(log_scale)`` with the log-scale clamped to [-5, 3].
* **zuko**: ``zuko.flows.MAF`` (natural and reversed orders alternate), and for IAF the same
  ``MaskedAutoregressiveTransform`` steps inverted (``.inv``); scale ``exp`` of a softly
  bounded log-scale.
* **nflows**: ``MaskedAffineAutoregressiveTransform`` with plain (not residual) blocks, one
  block after the first layer for two hidden layers; ``ReversePermutation`` between steps;
  ``InverseTransform`` for IAF; scale ``softplus(u) + 1e-3``.

With ``bijection="spline"`` every step is a monotone rational-quadratic spline (Durkan et al.
2019) with ``SPLINE_BINS`` bins on ``[-SPLINE_BOUND, SPLINE_BOUND]`` and linear (identity)
tails, ``3K - 1`` parameters per input from the same MADE shapes:

* **flowkit**: ``flowkit.nsf`` / ``flowkit.iaf(..., bijection=RationalQuadraticSpline(...))``;
  minimum bin sizes and derivative 1e-3; last MADE layer initialised near zero.
* **Pyro**: ``SplineAutoregressive(order="quadratic")`` (its rational-quadratic spline,
  ``param_dims=[K, K, K - 1]``), inverted for MAF; Pyro's MAF direction (``.inv``) samples
  with one conditioner pass per input.
* **zuko**: ``zuko.flows.NSF`` (bound 5 and minimum slope 1e-3 are its defaults), and for
  IAF its ``MaskedAutoregressiveTransform`` steps with the same spline, inverted.
* **nflows**: ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform(tails="linear",
  tail_bound=5)``, plain blocks as for the affine flow; minimum sizes and derivative 1e-3
  (its defaults).

The spline MAF of zuko, nflows and Pyro samples by one full conditioner pass per input (D
passes per step); flowkit's by its sequential pass (each hidden unit computed once).

The hidden degrees (which inputs a hidden unit may see) follow each library's rule, so the
number of active (unmasked) weights differs a little at equal parameter counts:
`Contender.active_weights` counts them.

The MAF direction scores data in one conditioner pass per step and samples sequentially; the
IAF direction samples (and scores its own samples) in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import flowkit

LIBRARIES = ("flowkit", "pyro", "zuko", "nflows")
DIRECTIONS = ("maf", "iaf")
BIJECTIONS = ("affine", "spline")
SPLINE_BINS = 8
SPLINE_BOUND = 5.0


@dataclass
class Contender:
    """One library's flow behind a common interface.

    Attributes:
        library: One of ``LIBRARIES``.
        module: The ``nn.Module`` that holds every parameter (for optimisers and state dicts).
        log_prob: ``log_prob(x)`` of rows ``x`` of shape ``(N, D)``.
        sample: ``sample(n)``, ``n`` rows without gradients.
        sample_and_log_prob: ``sample_and_log_prob(n)``, samples and their log-density in the
            way the library offers for a sample's own density.
    """

    library: str
    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]
    sample_and_log_prob: Callable[[int], tuple[Tensor, Tensor]]

    @property
    def num_parameters(self) -> int:
        """The number of trainable scalars (masked-out weights included, as stored)."""
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)

    @property
    def active_weights(self) -> int:
        """The number of weights that masks leave connected, biases excluded."""
        return active_weights(self.module)


def active_weights(module: nn.Module) -> int:
    """Counts the ``True`` (or nonzero) entries of every ``mask`` buffer of the masked layers
    of ``module`` (the four libraries all store one by that name)."""
    return sum(int((m.mask != 0).sum()) for m in module.modules() if isinstance(getattr(m, "mask", None), Tensor))


def build(
    library: str,
    direction: str,
    dim: int,
    num_transforms: int,
    hidden_dims: Sequence[int],
    seed: int = 0,
    bijection: str = "affine",
) -> Contender:
    """A `Contender` for ``library`` in ``direction`` (``"maf"`` or ``"iaf"``), with
    ``bijection`` ``"affine"`` or ``"spline"`` steps.

    Everything random (weights, and flowkit's mask seed) is drawn after
    ``torch.manual_seed(seed)``, so a rebuild gives the same model.

    Examples:
        >>> flow = build("zuko", "maf", 3, num_transforms=2, hidden_dims=[8, 8])
        >>> flow.log_prob(torch.zeros(4, 3)).shape
        torch.Size([4])
        >>> build("nflows", "iaf", 3, 2, [8, 8], bijection="spline").sample(5).shape
        torch.Size([5, 3])
    """
    if library not in LIBRARIES:
        raise ValueError(f"library: expected one of {LIBRARIES}, got {library!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")
    if len(hidden_dims) < 1 or len(set(hidden_dims)) != 1:
        raise ValueError(f"hidden_dims: expected one or more equal widths (nflows needs them), got {hidden_dims}")
    if bijection not in BIJECTIONS:
        raise ValueError(f"bijection: expected one of {BIJECTIONS}, got {bijection!r}")
    torch.manual_seed(seed)
    builder = {"flowkit": _flowkit, "pyro": _pyro, "zuko": _zuko, "nflows": _nflows}[library]
    return builder(direction, dim, num_transforms, list(hidden_dims), bijection == "spline")


def _orders(dim: int, num_transforms: int) -> list[Tensor]:
    """Natural, reversed, natural, ...: the orders of the steps when no permutation layer
    sits between them."""
    natural = torch.arange(dim)
    return [natural if k % 2 == 0 else natural.flip(0) for k in range(num_transforms)]


def _flowkit(direction: str, dim: int, num_transforms: int, hidden_dims: list[int], spline: bool) -> Contender:
    from flowkit.transforms import RationalQuadraticSpline

    bijection = RationalQuadraticSpline(SPLINE_BINS, SPLINE_BOUND) if spline else "affine"
    builder = flowkit.maf if direction == "maf" else flowkit.iaf
    flow = builder(dim, num_transforms, hidden_dims, permutation="reversed", bijection=bijection)
    return Contender(
        "flowkit",
        flow,
        log_prob=flow.log_prob,
        sample=lambda n: flow.sample((n,)),
        sample_and_log_prob=lambda n: flow.rsample_and_log_prob((n,)),
    )


def _pyro(direction: str, dim: int, num_transforms: int, hidden_dims: list[int], spline: bool) -> Contender:
    import pyro.distributions as dist
    from pyro.distributions.transforms import AffineAutoregressive, SplineAutoregressive
    from pyro.nn import AutoRegressiveNN

    def step(order: Tensor) -> nn.Module:
        if not spline:
            return AffineAutoregressive(AutoRegressiveNN(dim, hidden_dims, param_dims=[1, 1], permutation=order))
        K = SPLINE_BINS
        net = AutoRegressiveNN(dim, hidden_dims, param_dims=[K, K, K - 1], permutation=order)
        return SplineAutoregressive(dim, net, count_bins=K, bound=SPLINE_BOUND, order="quadratic")

    steps = nn.ModuleList(step(order) for order in _orders(dim, num_transforms))
    # Pyro's AffineAutoregressive is an IAF step (noise to data in one pass); its inverse
    # is a MAF step.
    transforms = list(steps) if direction == "iaf" else [step.inv for step in steps]
    base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)
    flow = dist.TransformedDistribution(base, transforms)

    def sample_and_log_prob(n: int) -> tuple[Tensor, Tensor]:
        x = flow.rsample((n,))
        return x, flow.log_prob(x)  # the steps' one-pair caches answer the inverse

    return Contender("pyro", steps, flow.log_prob, lambda n: flow.sample((n,)), sample_and_log_prob)


def _zuko(direction: str, dim: int, num_transforms: int, hidden_dims: list[int], spline: bool) -> Contender:
    from functools import partial

    import zuko

    if direction == "maf":
        if spline:
            flow = zuko.flows.NSF(dim, 0, bins=SPLINE_BINS, transforms=num_transforms, hidden_features=hidden_dims)
        else:
            flow = zuko.flows.MAF(dim, 0, transforms=num_transforms, hidden_features=hidden_dims)
    else:
        K = SPLINE_BINS
        univariate = dict(
            univariate=partial(zuko.transforms.MonotonicRQSTransform, bound=SPLINE_BOUND), shapes=[(K,), (K,), (K - 1,)]
        )
        steps = [
            zuko.flows.MaskedAutoregressiveTransform(
                dim, 0, order=order, hidden_features=hidden_dims, **(univariate if spline else {})
            ).inv
            for order in _orders(dim, num_transforms)
        ]
        base = zuko.flows.UnconditionalDistribution(
            zuko.distributions.DiagNormal, torch.zeros(dim), torch.ones(dim), buffer=True
        )
        flow = zuko.flows.Flow(steps, base)
    return Contender(
        "zuko",
        flow,
        log_prob=lambda x: flow().log_prob(x),
        sample=lambda n: flow().sample((n,)),
        sample_and_log_prob=lambda n: flow().rsample_and_log_prob((n,)),
    )


def _nflows(direction: str, dim: int, num_transforms: int, hidden_dims: list[int], spline: bool) -> Contender:
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms import (
        CompositeTransform,
        InverseTransform,
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        ReversePermutation,
    )

    blocks = dict(num_blocks=len(hidden_dims) - 1, use_residual_blocks=False)
    layers = []
    for index in range(num_transforms):
        if spline:
            step = MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                dim, hidden_dims[0], num_bins=SPLINE_BINS, tails="linear", tail_bound=SPLINE_BOUND, **blocks
            )
        else:
            step = MaskedAffineAutoregressiveTransform(dim, hidden_dims[0], **blocks)
        layers.append(step if direction == "maf" else InverseTransform(step))
        if index < num_transforms - 1:
            layers.append(ReversePermutation(dim))
    flow = Flow(CompositeTransform(layers), StandardNormal([dim]))

    def sample(n: int) -> Tensor:
        with torch.no_grad():
            return flow.sample(n)

    return Contender("nflows", flow, flow.log_prob, sample, flow.sample_and_log_prob)

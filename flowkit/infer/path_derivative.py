r"""The path-derivative ("sticking the landing") ELBO gradient of Roeder, Wu & Duvenaud (2017).

With a reparameterised sample \(z = T_\theta(u)\), \(u \sim \mathcal{N}(0, I)\), the
gradient of one draw of the ELBO, \(\log p(x, z) - \log q_\theta(z)\), has two parts:

\[
    \underbrace{\left(\nabla_z \log p(x, z) - \nabla_z \log q_\theta(z)\right)
    \frac{\partial z}{\partial \theta}}_{\text{path}}
    \; - \; \underbrace{\nabla_\theta \log q_\theta(z)\big|_{z \text{ fixed}}}_{\text{score}}.
\]

The score part has expectation zero under \(q_\theta\) but not variance zero, and it does
not vanish when \(q_\theta\) is the posterior; the path part does (the bracket is zero
for every \(z\) when \(q = p(\cdot \mid x)\)). Scoring the guide's own sample with the
parameters held fixed, \(\log q_{\bar\theta}(z)\) with \(\bar\theta\) detached and \(z\)
keeping its gradient, drops the score part: an unbiased gradient whose variance goes to
zero as the guide reaches the posterior.

[`PathDerivativeFlow`][flowkit.infer.path_derivative.PathDerivativeFlow] is a flow
posterior whose ``log_prob`` at its own samples is that fixed-parameter score. Its gradient
with respect to \(z\) is all that matters, and for the guide's own sample it is known
without inverting the flow: with \(J = \partial z / \partial u\) and the flow's
log-determinant \(\ell(u) = \log |\det J|\),

\[
    \nabla_z \log q(z) = J^{-\top} \left(-u - \nabla_u \ell(u)\right),
\]

so one pass of the flow over \(D + 1\) copies of the noise (one per row of \(J\), one for
\(\nabla_u \ell\)), its backward pass and a \(D \times D\) solve per draw give it exactly. An
IAF's inverse, the other way, is a sequential pass of \(D\) small steps per IAF step,
whose Python overhead costs far more than the arithmetic for the latent sizes of typical
guides; it stays the path for points the guide did not draw, for latent vectors of more
than [`JACOBIAN_MAX_DIM`][flowkit.infer.path_derivative.JACOBIAN_MAX_DIM] coordinates,
and under ``torch.jit.trace`` (``JitTrace_ELBO``), which records it once and replays it
without the Python.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor, nn

from flowkit.distributions.flows import Flow, _inverse_and_log_det

__all__ = ["JACOBIAN_MAX_DIM", "PathDerivativeFlow", "inverse_with_fixed_parameters"]

JACOBIAN_MAX_DIM = 128
"""The largest latent size for which the score of the guide's own sample comes from the
flow's Jacobian (memory and a solve per draw grow as D^2 and D^3); larger ones invert."""


def standard_normal_log_prob(u: Tensor) -> Tensor:
    """The log-density of ``N(0, I)`` at ``u``, summed over the last dimension."""
    return -0.5 * u.square().sum(-1) - 0.5 * u.shape[-1] * math.log(2 * math.pi)


@contextlib.contextmanager
def _detached_parameters(module: nn.Module) -> Iterator[None]:
    """Within the block, every parameter of ``module`` reads as a detached tensor (the
    same values, no gradient path). ``torch.func.functional_call`` does this too, but
    refuses to run under ``torch.jit.trace``, which ``JitTrace_ELBO`` uses."""
    swapped = []
    for submodule in module.modules():
        for name, parameter in submodule._parameters.items():
            if parameter is not None:
                swapped.append((submodule, name, parameter))
                submodule._parameters[name] = parameter.detach()
    try:
        yield
    finally:
        for submodule, name, parameter in swapped:
            submodule._parameters[name] = parameter


def inverse_with_fixed_parameters(flow: Flow, value: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""``flow``'s inverse at ``value`` and \(\log |\det \partial f / \partial u|\) there,
    computed with every parameter of ``flow`` (and ``context``) detached: gradients reach
    ``value`` only.

    Args:
        flow: The flow whose transforms to invert (its base is not used).
        value: Data-side points, shape ``(..., D)``.
        context: The context of a conditional flow, detached too.

    Returns:
        ``(u, log_det)``: the noise-side points and the log-determinant of the forward map
        at them, shape ``value.shape[:-1]``.

    Examples:
        >>> from flowkit import iaf
        >>> flow = iaf(2, num_transforms=2, hidden_dims=[8], seed=0)
        >>> z = torch.randn(3, 2, requires_grad=True)
        >>> u, log_det = inverse_with_fixed_parameters(flow, z)
        >>> u.sum().backward()
        >>> z.grad is not None, all(p.grad is None for p in flow.parameters())
        (True, True)
    """
    context = None if context is None else context.detach()
    log_det = value.new_zeros(())
    with _detached_parameters(flow):
        for transform in reversed(flow.conditioned_transforms(context)):
            # inverse_and_log_det never reads the cache: a cached pair from a sample holds
            # the live parameters' graph, which would bring the score part back.
            value, step_log_det = _inverse_and_log_det(transform, value)
            log_det = log_det + step_log_det
    return value, log_det


@dataclass
class _OwnSample:
    """The last draw of a [`PathDerivativeFlow`][flowkit.infer.path_derivative.PathDerivativeFlow]."""

    z: Tensor
    noise: Tensor
    version: int  # z._version right after the draw: an in-place change makes it an outside point


class PathDerivativeFlow(TorchDistribution):
    r"""A flow posterior \(z = T_\theta(u)\), \(u \sim \mathcal{N}(0, I)\), whose
    ``log_prob`` holds its parameters fixed: the path-derivative ELBO gradient for a guide
    that samples from it (see the module's description).

    ``rsample`` is reparameterised as usual. ``log_prob(value)`` equals
    \(\log q_\theta(\text{value})\), but its gradient reaches ``value`` only, never the
    parameters: through the flow's Jacobian at the noise of a sample this distribution
    just drew, through ``fixed_log_prob`` for any other point. Do not differentiate it for
    anything but the ELBO (a maximum-likelihood fit of the guide, or importance-weighted
    bounds such as ``RenyiELBO``, for which the path derivative is biased).

    Args:
        push: ``u -> (z, log|det dz/du|)`` with the live parameters, for noise ``u`` of shape
            ``(..., event_size)``, row by row (no coupling between draws).
        fixed_log_prob: ``value -> log q(value)`` with the parameters detached, for any point.
        batch_shape: The batch shape.
        event_size: ``D``, the size of ``z``.
        prototype: A tensor with the dtype and device of the noise.

    Examples:
        >>> loc = torch.zeros(2, requires_grad=True)
        >>> push = lambda u: (loc + u, u.new_zeros(u.shape[:-1]))
        >>> fixed = lambda z: standard_normal_log_prob(z - loc.detach())
        >>> q = PathDerivativeFlow(push, fixed, torch.Size(), 2, loc)
        >>> z = q.rsample((5,))
        >>> torch.allclose(q.log_prob(z), standard_normal_log_prob(z - loc)), q.log_prob(z.detach()).requires_grad
        (True, False)
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        push: Callable[[Tensor], tuple[Tensor, Tensor]],
        fixed_log_prob: Callable[[Tensor], Tensor],
        batch_shape: torch.Size,
        event_size: int,
        prototype: Tensor,
    ):
        self.push = push
        self.fixed_log_prob = fixed_log_prob
        self.prototype = prototype
        self._own: _OwnSample | None = None
        super().__init__(torch.Size(batch_shape), torch.Size([event_size]), validate_args=False)

    def expand(self, batch_shape, _instance=None) -> PathDerivativeFlow:
        return PathDerivativeFlow(self.push, self.fixed_log_prob, batch_shape, self.event_shape[0], self.prototype)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, dtype=self.prototype.dtype, device=self.prototype.device)
        z, _ = self.push(noise)
        self._own = _OwnSample(z, noise, z._version) if not z.is_inference() else None
        return z

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        log_q = self._own_sample_log_prob(value)
        if log_q is None:
            log_q = self.fixed_log_prob(value)
        return _broadcast_to_batch(log_q, self.batch_shape)

    def _own_sample_log_prob(self, value: Tensor) -> Tensor | None:
        r"""\(\log q(z)\) at this distribution's last draw \(z\), with the gradient
        \(J^{-\top}(-u - \nabla_u \ell)\) to \(z\) (module description); ``None`` when
        ``value`` is not that draw, or the flow no longer maps its noise onto it."""
        own = self._own
        if own is None or value is not own.z or value._version != own.version:
            return None
        if torch._C._get_tracing_state() is not None or self.event_shape[0] > JACOBIAN_MAX_DIM:
            return None
        size, noise = self.event_shape[0], own.noise.detach()
        if not (torch.is_grad_enabled() and value.requires_grad):  # the value alone: one pass
            with torch.no_grad():
                z_now, log_det_now = self.push(noise)
            return standard_normal_log_prob(noise) - log_det_now if _same_point(z_now, value) else None
        # Copy j of the noise gives row j of J; copy D gives the gradient of log|det J|.
        copies = noise.expand(size + 1, *noise.shape).clone().requires_grad_()
        with torch.enable_grad():
            z, log_det = self.push(copies)
            outputs, seeds = _jacobian_seeds(size, z, log_det)
            (grad,) = torch.autograd.grad(outputs, copies, seeds)
        if not _same_point(z[size].detach(), value):
            return None
        score = _solve_transposed(grad[:size].movedim(0, -2), -noise - grad[size])  # J is (..., D_out, D_in)
        if score is None:
            return None
        log_q = standard_normal_log_prob(noise) - log_det[size].detach()
        # The value of log q, and the gradient score . dz: (value - value.detach()) is zero.
        return log_q + (score * (value - value.detach())).sum(-1)


def _broadcast_to_batch(log_q: Tensor, batch_shape: torch.Size) -> Tensor:
    """``log_q`` expanded to the batch shape, as a view only where that changes its shape
    (an expand to its own shape would still cost a node in the backward pass)."""
    shape = torch.broadcast_shapes(log_q.shape, batch_shape)
    return log_q if log_q.shape == shape else log_q.expand(shape)


def _jacobian_seeds(size: int, z: Tensor, log_det: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """The outputs and their seeds for one backward pass over the ``size + 1`` noise
    copies: ``e_j`` on row ``j`` of ``z`` (``j < size``) and 1 on the last copy's
    log-determinant, as views of one identity (no product, sum or slice in the graph)."""
    unit = torch.eye(size + 1, dtype=z.dtype, device=z.device)
    batch_ones = [1] * (z.dim() - 2)
    z_seed = unit[:, :size].reshape(size + 1, *batch_ones, size).expand(z.shape)
    if not log_det.requires_grad:  # a log-determinant constant in the noise: its gradient is zero
        return [z], [z_seed]
    log_det_seed = unit[:, size].reshape(size + 1, *batch_ones).expand(log_det.shape)
    return [z, log_det], [z_seed, log_det_seed]


def _solve_transposed(jacobian: Tensor, rhs: Tensor) -> Tensor | None:
    """``s`` with ``J^T s = rhs`` for every draw, solved in float64 (a product of many
    steps' Jacobians can be badly conditioned in float32); ``None`` when some ``J`` is
    singular to working precision, for the sequential inverse to answer instead."""
    wide = torch.float64 if jacobian.dtype in (torch.float16, torch.bfloat16, torch.float32) else jacobian.dtype
    solution, info = torch.linalg.solve_ex(jacobian.transpose(-1, -2).to(wide), rhs.unsqueeze(-1).to(wide))
    if bool(info.any()) or not bool(torch.isfinite(solution).all()):
        return None
    return solution.squeeze(-1).to(rhs.dtype)


def _same_point(z_now: Tensor, value: Tensor) -> bool:
    """Whether the flow still maps the draw's noise onto ``value`` (to half the digits of
    the dtype): if the parameters changed since the draw, its noise is no longer its preimage."""
    tolerance = torch.finfo(z_now.dtype).eps ** 0.5
    return torch.allclose(z_now, value.detach(), rtol=tolerance, atol=tolerance)

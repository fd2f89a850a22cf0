r"""Masked linear layers and MADE, the masked autoregressive conditioner.

MADE (Germain et al., 2015) multiplies the weights of an autoencoder by binary masks,
\(h = g((W \odot M) x + b)\), so that the outputs for input \(x_d\) depend only
on the inputs that come before \(x_d\) in an order. One pass then gives the
parameters of every conditional \(p(x_d \mid x_{<d})\).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.nn import masks as M
from flowkit._callsite import user_stacklevel
from flowkit._seeding import make_generator
from flowkit._validation import as_shape, check_tensor

__all__ = ["MADE", "LostDependencyWarning", "MADEConfig", "MaskedLinear", "default_hidden_dims"]


class _InPlaceActivation(nn.Module):
    """``relu``, ``elu`` or ``leaky_relu``, applied in place. Their gradients are computed
    from their outputs, so overwriting a pre-activation that nothing else reads is safe,
    and saves a (batch, width) allocation per layer. Not under a TorchScript trace (Pyro's
    ``JitTrace_ELBO``), whose optimised graphs reject in-place ops on some views."""

    def __init__(self, function: Callable[..., Tensor]):
        super().__init__()
        self.function = function

    def forward(self, h: Tensor) -> Tensor:
        return self.function(h, inplace=not torch.jit.is_tracing())

    def extra_repr(self) -> str:
        return self.function.__name__


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": partial(_InPlaceActivation, F.relu),
    "elu": partial(_InPlaceActivation, F.elu),
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": partial(_InPlaceActivation, F.leaky_relu),
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
}


class LostDependencyWarning(UserWarning):
    """A MADE whose hidden layers are too narrow to keep every conditional dependency."""


class MaskedLinear(nn.Linear):
    r"""A linear layer whose weight is multiplied by a fixed boolean mask,
    \(y = (W \odot M) x + b\).

    The mask is a registered buffer, so it follows ``.to()``, ``.double()``, the
    ``state_dict`` and pickling. Weights are initialised like `torch.nn.Linear`
    but with each unit's fan-in counted after masking, so sparse rows are not
    initialised too small.

    Args:
        mask: A boolean tensor of shape ``(out_features, in_features)``.
        bias: Whether to add a bias.

    Examples:
        >>> layer = MaskedLinear(torch.tensor([[True, False], [True, True]]))
        >>> layer(torch.ones(2)).shape
        torch.Size([2])
    """

    def __init__(self, mask: Tensor, bias: bool = True):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.device, torch.bool, copy=True))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not hasattr(self, "mask"):  # nn.Linear.__init__ calls this before the mask exists
            return
        fan_in = self.mask.sum(dim=1, keepdim=True).clamp(min=1).to(self.weight.dtype)
        bound = 1.0 / fan_in.sqrt()
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0).mul_(bound)
            if self.bias is not None:
                self.bias.uniform_(-1.0, 1.0).mul_(bound.squeeze(1))

    def set_mask(self, mask: Tensor) -> None:
        """Replaces the mask in place (same shape)."""
        self.mask.copy_(mask)

    def masked_weight(self) -> Tensor:
        r"""The effective weight \(W \odot M\)."""
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


class MADE(nn.Module):
    r"""Masked Autoencoder for Distribution Estimation.

    Maps ``x`` of shape ``(..., D)`` to parameters for every conditional
    \(p(x_d \mid x_{<d}, c)\): the outputs for input ``d`` depend only on the inputs
    that come before ``d`` in ``permutation`` (and on the optional context ``c``).

    The call convention is Pyro's `pyro.nn.AutoRegressiveNN`, so a MADE with
    ``param_dims=[1, 1]`` is a drop-in ``autoregressive_nn`` for
    `pyro.distributions.transforms.AffineAutoregressive`:

    * ``param_dims=[1]``: one tensor ``(..., D)``;
    * ``param_dims=[p]``: one tensor ``(..., p, D)``;
    * ``param_dims=[1, 1, ...]``: a tuple of ``(..., D)`` tensors;
    * otherwise a tuple with one ``(..., p_i, D)`` tensor for each ``p_i``.

    [`raw_output`][flowkit.nn.made.MADE.raw_output] gives all parameters as one ``(..., sum(param_dims), D)`` tensor.

    A MADE can hold several mask sets (orders and hidden degrees) and switch between
    them with [`set_mask`][flowkit.nn.made.MADE.set_mask]: that is the MADE paper's order- and connectivity-agnostic
    training (cycle masks per minibatch) and ensembling (average over masks).

    Args:
        input_dim: The number of inputs ``D``.
        hidden_dims: The widths of the hidden layers (at least one).
        param_dims: The number of parameters per input, per group, as in Pyro.
        context_dim: The size of the context (conditioning) input; 0 for none.
        order: ``"natural"``, ``"reversed"``, ``"random"`` or a permutation of
            ``range(D)`` listing the inputs in autoregressive order (see
            [`make_order`][flowkit.nn.masks.make_order]). With ``"random"`` every mask set
            gets its own order.
        degrees: Hidden-degree scheme, ``"even"`` or ``"random"`` (see
            [`hidden_degrees`][flowkit.nn.masks.hidden_degrees]).
        activation: A name (``"relu"``, ``"elu"``, ``"tanh"``, ``"gelu"``, ``"silu"``,
            ``"leaky_relu"``, ``"softplus"``, ``"sigmoid"``), a module or a module class.
        skip_connections: Add direct masked connections from inputs (and context)
            to outputs.
        residual: Make every hidden layer after the first residual,
            \(h_l = h_{l-1} + g(W_l h_{l-1} + b_l)\). Needs equal widths.
        num_masks: The number of mask sets.
        seed: An int or a `torch.Generator` that fixes the masks; ``None`` draws
            them from torch's global generator (as Pyro does).
        on_lost_dependencies: ``"warn"`` (default) or ``"raise"`` when hidden layers
            narrower than ``D - 1`` (``D`` with a context) leave some allowed (input,
            output) pairs unconnected; [`lost_dependencies`][flowkit.nn.made.MADE.lost_dependencies]
            lists them.

    Examples:
        >>> made = MADE(3, [16, 16], param_dims=[1, 1], order="reversed", seed=0)
        >>> loc, log_scale = made(torch.randn(5, 3))
        >>> loc.shape
        torch.Size([5, 3])
        >>> made.permutation
        tensor([2, 1, 0])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int] = (1,),
        context_dim: int = 0,
        order: str | Sequence[int] | Tensor = "natural",
        degrees: str = "even",
        activation: str | nn.Module | type[nn.Module] | Callable[[Tensor], Tensor] = "relu",
        skip_connections: bool = False,
        residual: bool = False,
        num_masks: int = 1,
        seed: int | torch.Generator | None = None,
        on_lost_dependencies: str = "warn",
    ):
        super().__init__()
        M._check_positive_int(input_dim, "input_dim")
        hidden_dims = _check_int_list(hidden_dims, "hidden_dims")
        param_dims = _check_int_list(param_dims, "param_dims")
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim: expected a non-negative int, got {context_dim!r}")
        M._check_positive_int(num_masks, "num_masks")
        if degrees not in M.DEGREE_SCHEMES:
            raise ValueError(f"degrees: expected one of {M.DEGREE_SCHEMES}, got {degrees!r}")
        if residual and len(set(hidden_dims)) > 1:
            raise ValueError(f"hidden_dims: residual=True needs equal widths, got {hidden_dims}")
        if on_lost_dependencies not in ("warn", "raise"):
            raise ValueError(f"on_lost_dependencies: expected 'warn' or 'raise', got {on_lost_dependencies!r}")

        self.input_dim = input_dim
        self.hidden_dims = hidden_dims
        self.param_dims = param_dims
        self.context_dim = context_dim
        self.residual = residual
        self.num_masks = num_masks

        # The structure is drawn and checked on the CPU, then stored as buffers where torch
        # puts new tensors (torch.set_default_device), beside the parameters.
        generator = make_generator(seed)
        sets = [self._draw_degrees(order, degrees, generator) for _ in range(num_masks)]
        device = torch.empty(0).device
        self.register_buffer("orders", torch.stack([M.order_from_degrees(s[0]) for s in sets]).to(device))
        for layer in range(len(hidden_dims)):
            self.register_buffer(f"hidden_degrees_{layer}", torch.stack([s[1][layer] for s in sets]).to(device))
        self.register_buffer("mask_index", torch.zeros((), dtype=torch.long, device=device))
        # Python copies of the structure, so that forward and sampling never read a
        # buffer's value back from the device (and torch.compile sees constants).
        self._active_mask = 0
        self._plans = [_SequentialPlan.of(*s) for s in sets]
        self.register_load_state_dict_post_hook(MADE._sync_from_buffers)  # a function, so it pickles

        first, *middle, last, skip = self._mask_chain(*sets[0])
        self.input_layer = MaskedLinear(first)
        self.hidden_layers = nn.ModuleList(MaskedLinear(mask) for mask in middle)
        self.output_layer = MaskedLinear(last)
        self.skip_layer = MaskedLinear(skip, bias=False) if skip_connections else None
        self.context_layer = nn.Linear(context_dim, hidden_dims[0], bias=False) if context_dim else None
        self.context_skip_layer = (
            nn.Linear(context_dim, last.shape[0], bias=False) if context_dim and skip_connections else None
        )
        self.activation = _activation(activation)
        self._report_lost_dependencies(on_lost_dependencies, sets)

    # ----------------------------------------------------------------- structure
    def _draw_degrees(self, order, scheme: str, generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        input_degrees = M.degrees_from_order(M.make_order(self.input_dim, order, generator))
        # Degree-0 units see only the context; with no context they are useful only when D = 1.
        low = 0 if self.context_dim or self.input_dim == 1 else 1
        high = max(self.input_dim - 1, low)
        hidden = []
        for width in self.hidden_dims:
            if self.residual and hidden:
                layer_degrees = hidden[-1]  # h + f(h) needs matching degrees
            else:
                layer_degrees = M.hidden_degrees(width, low, high, scheme, generator)
            low = int(layer_degrees.min())  # a unit below the previous layer's minimum would see nothing
            hidden.append(layer_degrees)
        return input_degrees, hidden

    def degrees(self, index: int | None = None) -> list[Tensor]:
        """Degrees of the inputs and of each hidden layer for mask set ``index``
        (default: the active one)."""
        index = self._check_index(index)
        order = self.orders[index]
        hidden = [getattr(self, f"hidden_degrees_{layer}")[index] for layer in range(len(self.hidden_dims))]
        return [M.degrees_from_order(order), *hidden]

    def _masks(self, index: int) -> list[Tensor]:
        """Masks of mask set ``index``: input layer, hidden layers, output, skip."""
        input_degrees, *hidden = self.degrees(index)
        return self._mask_chain(input_degrees, hidden)

    def _mask_chain(self, input_degrees: Tensor, hidden: list[Tensor]) -> list[Tensor]:
        """Masks for these degrees: input layer, hidden layers, output, skip."""
        output_degrees = input_degrees.repeat(sum(self.param_dims))
        masks = [M.hidden_mask(input_degrees, hidden[0])]
        masks += [M.hidden_mask(prev, nxt) for prev, nxt in zip(hidden, hidden[1:])]
        masks.append(M.output_mask(hidden[-1], output_degrees))
        masks.append(M.output_mask(input_degrees, output_degrees))
        return masks

    def masks(self, index: int | None = None) -> list[Tensor]:
        """The boolean masks of mask set ``index``, first layer first; the direct
        input-to-output mask is last when ``skip_connections``. For the active set (the
        default) these are the masks the layers hold, as they are used."""
        if index is None or index == self._active_mask:
            layers = [self.input_layer, *self.hidden_layers, self.output_layer]
            return [layer.mask for layer in layers] + ([self.skip_layer.mask] if self.skip_layer is not None else [])
        return self._used_masks(self._masks(self._check_index(index)))

    def _used_masks(self, chain_and_skip: list[Tensor]) -> list[Tensor]:
        *chain, skip = chain_and_skip
        return chain + ([skip] if self.skip_layer is not None else [])

    def connectivity(self, index: int | None = None) -> Tensor:
        """A ``(D, D)`` boolean matrix: ``[i, j]`` is True when some path through the
        masks of set ``index`` (default: the active one, as held by the layers) connects
        input ``j`` to any output parameter of input ``i``."""
        return self._connectivity(self.masks(index))

    def _connectivity(self, masks: list[Tensor]) -> Tensor:
        chain, skip = (masks[:-1], masks[-1]) if self.skip_layer is not None else (masks, None)
        residual = [False, *([self.residual] * len(self.hidden_layers)), False]
        reach = M.connectivity(chain, residual, skip)
        return reach.unflatten(0, (-1, self.input_dim)).any(dim=0)

    def lost_dependencies(self, index: int | None = None) -> list[tuple[int, int]]:
        """The ``(input, output)`` pairs that the order allows but the masks of set
        ``index`` cannot connect (only when a hidden layer is narrower than ``D - 1``)."""
        input_degrees = self.degrees(index)[0]
        return M.lost_dependencies(self.connectivity(index), input_degrees, input_degrees)

    def _report_lost_dependencies(self, action: str, sets: list[tuple[Tensor, list[Tensor]]]) -> None:
        """Warns (or raises) for each mask set, given as CPU degrees, that loses dependencies."""
        allowed = self.input_dim * (self.input_dim - 1) // 2
        needed = self.input_dim if self.context_dim else self.input_dim - 1  # one unit per useful degree
        for index, (input_degrees, hidden) in enumerate(sets):
            reach = self._connectivity(self._used_masks(self._mask_chain(input_degrees, hidden)))
            lost = M.lost_dependencies(reach, input_degrees, input_degrees)
            if not lost:
                continue
            shown = ", ".join(f"input {j} -> output {i}" for j, i in lost[:8]) + (", ..." if len(lost) > 8 else "")
            message = (
                f"MADE(input_dim={self.input_dim}, hidden_dims={self.hidden_dims}): mask set {index} "
                f"cannot connect {len(lost)} of {allowed} allowed (input, output) pairs (0-based indices): {shown}. "
                f"Layers of width >= {needed} keep them all; made.lost_dependencies() lists them."
            )
            if action == "raise":
                raise ValueError(f"hidden_dims: {message}")
            warnings.warn(message, LostDependencyWarning, stacklevel=user_stacklevel())

    # ----------------------------------------------------------------- mask sets
    def _check_index(self, index: int | None) -> int:
        if index is None:
            return self._active_mask
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.num_masks:
            raise ValueError(f"index: expected an int in [0, {self.num_masks}), got {index!r}")
        return index

    def set_mask(self, index: int) -> None:
        """Activates mask set ``index`` (order and hidden degrees) in every layer."""
        index = self._check_index(index)
        first, *middle, last, skip = self._masks(index)
        self.input_layer.set_mask(first)
        for layer, mask in zip(self.hidden_layers, middle):
            layer.set_mask(mask)
        self.output_layer.set_mask(last)
        if self.skip_layer is not None:
            self.skip_layer.set_mask(skip)
        self.mask_index.fill_(index)
        self._active_mask = index

    def next_mask(self) -> int:
        """Activates the next mask set (cyclically) and returns its index."""
        index = (self._active_mask + 1) % self.num_masks
        self.set_mask(index)
        return index

    def _sync_from_buffers(self, incompatible_keys=None) -> None:
        """Refreshes the Python copies of the structure after its buffers were overwritten
        (by ``load_state_dict``, or by ``DistributedDataParallel`` copying rank 0's)."""
        self._active_mask = int(self.mask_index)
        self._plans = []
        for index in range(self.num_masks):
            input_degrees, *hidden = self.degrees(index)
            self._plans.append(_SequentialPlan.of(input_degrees, hidden))

    @property
    def active_mask(self) -> int:
        """The index of the active mask set (the ``mask_index`` buffer, as a Python int)."""
        return self._active_mask

    @property
    def permutation(self) -> Tensor:
        """The active order: ``permutation[k]`` is the input that comes ``k``-th (Pyro's
        attribute, read by its transforms to invert)."""
        return self.orders[self._active_mask]

    def get_permutation(self) -> Tensor:
        """The active order, as Pyro's `AutoRegressiveNN.get_permutation`."""
        return self.permutation

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, x: Tensor, context: Tensor | None) -> None:
        dtype = self.output_layer.weight.dtype
        check_tensor(x, "x", self.input_dim, "input_dim", dtype)
        if self.context_dim == 0:
            if context is not None:
                raise ValueError("context: this MADE was built with context_dim=0 and takes no context")
            return
        if context is None:
            raise ValueError(f"context: this MADE needs a context of size context_dim={self.context_dim}")
        check_tensor(context, "context", self.context_dim, "context_dim", dtype)
        try:
            torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"context: batch shape {tuple(context.shape[:-1])} does not broadcast with "
                f"x's batch shape {tuple(x.shape[:-1])}"
            ) from None

    def raw_output(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """All parameters as one tensor of shape ``(..., sum(param_dims), D)``."""
        self._check_inputs(x, context)
        h = self.input_layer(x)
        if context is not None:
            h = h + self.context_layer(context)
        h = self.activation(h)
        for layer in self.hidden_layers:
            update = self.activation(layer(h))
            h = h + update if self.residual else update
        out = self.output_layer(h)
        if self.skip_layer is not None:
            out = out + self.skip_layer(x)
            if context is not None:
                out = out + self.context_skip_layer(context)
        return out.unflatten(-1, (-1, self.input_dim))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor | tuple[Tensor, ...]:
        """Parameters of every conditional, split like Pyro's ``AutoRegressiveNN``."""
        return self.split_params(self.raw_output(x, context))

    def split_params(self, out: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Splits a ``(..., sum(param_dims), D)`` tensor in Pyro's output layout."""
        if len(self.param_dims) == 1:
            return out.squeeze(-2) if self.param_dims[0] == 1 else out
        if all(p == 1 for p in self.param_dims):
            return out.unbind(-2)
        return tuple(out.split(self.param_dims, dim=-2))

    # ----------------------------------------------------- sequential direction
    def sequential(
        self,
        step: Callable[[Tensor, int], Tensor],
        batch_shape: int | Sequence[int] = (),
        context: Tensor | None = None,
        method: str = "fast",
    ) -> tuple[Tensor, Tensor]:
        r"""Builds ``x`` one input at a time in autoregressive order.

        For ``k = 0, ..., D-1`` with ``i = permutation[k]``, computes the MADE outputs
        for input ``i`` (which depend only on the inputs already built) and sets
        ``x[..., i] = step(params, i)``, where ``params`` has shape
        ``(..., sum(param_dims))``. This is MAF sampling, IAF inversion and ancestral
        sampling of MADE density models.

        ``method="fast"`` computes each hidden unit exactly once: since units are sorted
        by degree, the units of degree ``k`` (in every layer) are final as soon as the
        inputs of rank ``<= k`` are known, so step ``k + 1`` evaluates only that thin
        slice of each layer. The arithmetic of the whole loop is about one forward pass.
        ``method="naive"`` runs a full forward pass per input; it is the reference.

        Args:
            step: ``step(params, i) -> x_i``, with ``params`` of shape
                ``(*batch, sum(param_dims))`` and ``x_i`` of shape ``batch``.
            batch_shape: The batch shape of ``x``, an int or a shape (broadcast with the context's).
            context: The context, if the MADE has one.
            method: ``"fast"`` or ``"naive"``.

        Returns:
            ``(x, params)``: ``x`` of shape ``(*batch, D)`` and the MADE outputs at ``x``,
            of shape ``(*batch, sum(param_dims), D)``.

        Examples:
            >>> made = MADE(3, [8], seed=0)
            >>> x, params = made.sequential(lambda p, i: p[..., 0] + 1.0, batch_shape=(4,))
            >>> torch.allclose(params, made.raw_output(x))
            True
        """
        batch_shape = as_shape(batch_shape, "batch_shape")
        if context is not None:
            check_tensor(context, "context", self.context_dim, "context_dim")
            try:
                batch_shape = torch.broadcast_shapes(batch_shape, context.shape[:-1])
            except RuntimeError:
                raise ValueError(
                    f"context: batch shape {tuple(context.shape[:-1])} does not broadcast with "
                    f"batch_shape {tuple(batch_shape)}"
                ) from None
        probe = self.output_layer.weight.new_zeros(batch_shape + (self.input_dim,))
        self._check_inputs(probe, context)
        if method == "fast":
            # The fast path reads weights directly; one call on zero rows goes through every
            # layer's __call__, so a MADE converted to a PyroModule registers its parameters.
            no_rows = None if context is None else context.reshape(-1, self.context_dim)[:0]
            self.raw_output(probe.reshape(-1, self.input_dim)[:0], no_rows)
            return self._sequential_fast(step, batch_shape, context)
        if method == "naive":
            return self._sequential_naive(step, probe, context)
        raise ValueError(f"method: expected 'fast' or 'naive', got {method!r}")

    def _sequential_naive(self, step, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        columns = list(x.unbind(-1))
        for i in self.permutation.tolist():
            params = self.raw_output(torch.stack(columns, dim=-1), context)
            columns[i] = step(params[..., i], i)
        x = torch.stack(columns, dim=-1)
        return x, self.raw_output(x, context)

    def _sequential_fast(self, step, batch_shape: torch.Size, context: Tensor | None) -> tuple[Tensor, Tensor]:
        D, P = self.input_dim, sum(self.param_dims)
        order = self.permutation
        plan = self._plans[self._active_mask]
        ready = plan.ready
        layers = [self.input_layer, *self.hidden_layers]
        weights = [layer.masked_weight() for layer in layers]
        weights[0] = weights[0][:, order]  # input columns in rank order
        # Output rows for the input of rank k: p * D + order[k] for every parameter p.
        out_rows = (torch.arange(P, device=order.device)[:, None] * D + order[None, :]).T
        out_weight = self.output_layer.masked_weight()[out_rows]  # (D, P, H_last)
        out_bias = self.output_layer.bias[out_rows]  # (D, P)
        if self.skip_layer is not None:
            skip_weight = self.skip_layer.masked_weight()[:, order][out_rows]  # (D, P, D)
        if context is not None:
            context_hidden = self.context_layer(context)
            if self.context_skip_layer is not None:
                context_out = self.context_skip_layer(context)

        empty = out_bias.new_zeros(batch_shape + (0,))
        x_ranked = empty  # the inputs of rank < k, in rank order
        known = [empty] * len(layers)  # per layer, the units of degree <= k computed so far
        params_ranked = []
        for k in range(D):
            inputs = x_ranked
            for l, layer in enumerate(layers):
                start, stop = ready[l][k], ready[l][k + 1]  # the units of degree exactly k
                if stop > start:
                    pre = inputs @ weights[l][start:stop, : inputs.shape[-1]].T + layer.bias[start:stop]
                    if l == 0 and context is not None:
                        pre = pre + context_hidden[..., start:stop]
                    new = self.activation(pre)
                    if l > 0 and self.residual:
                        new = new + inputs[..., start:stop]
                    known[l] = torch.cat([known[l], new], dim=-1)
                inputs = known[l]
            params = inputs @ out_weight[k, :, : inputs.shape[-1]].T + out_bias[k]
            if self.skip_layer is not None:
                params = params + x_ranked @ skip_weight[k, :, :k].T
                if context is not None:
                    params = params + context_out[..., out_rows[k]]
            x_k = step(params, plan.order[k])
            x_ranked = torch.cat([x_ranked, x_k.unsqueeze(-1)], dim=-1)
            params_ranked.append(params)
        ranks = M.degrees_from_order(order) - 1
        return x_ranked.index_select(-1, ranks), torch.stack(params_ranked, dim=-1).index_select(-1, ranks)


@dataclass(frozen=True)
class _SequentialPlan:
    """One mask set's structure as Python ints, for the sequential pass.

    ``order[k]`` is the input of rank ``k``, and ``ready[l][k]`` how many units of hidden
    layer ``l`` have degree ``< k`` (units are sorted by degree, so
    ``ready[l][k]:ready[l][k + 1]`` are the units of degree ``k``).
    """

    order: list[int]
    ready: list[list[int]]

    @staticmethod
    def of(input_degrees: Tensor, hidden: list[Tensor]) -> _SequentialPlan:
        steps = torch.arange(len(input_degrees), device="cpu")
        ready = [[0, *torch.searchsorted(degrees.cpu(), steps, right=True).tolist()] for degrees in hidden]
        return _SequentialPlan(M.order_from_degrees(input_degrees.cpu()).tolist(), ready)


def _activation(activation) -> nn.Module | Callable[[Tensor], Tensor]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        return ACTIVATIONS[activation]()
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    if callable(activation):
        return activation
    raise TypeError(f"activation: expected a name, a module or a callable, got {type(activation).__name__}")


def _check_int_list(values: Sequence[int], name: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: expected a sequence of positive ints, got {type(values).__name__}")
    values = list(values)
    if not values:
        raise ValueError(f"{name}: expected a non-empty sequence of positive ints, got []")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected positive ints, got {values}")
    return values



def default_hidden_dims(input_dim: int) -> list[int]:
    """Two layers of ``max(64, 3 * input_dim + 1)`` units: wide enough for every
    dependency, like Pyro's ``3 * input_dim + 1``, and at least zuko's 64."""
    return [max(64, 3 * input_dim + 1)] * 2


@dataclass(frozen=True)
class MADEConfig:
    """The options of the [`MADE`][flowkit.nn.MADE] that conditions each step of a flow,
    for the builders ([`maf`][flowkit.distributions.flows.maf],
    [`iaf`][flowkit.distributions.flows.iaf], [`nsf`][flowkit.distributions.flows.nsf],
    the ``affine_*`` transform builders, the guides): everything but what the flow decides
    itself (the input size, the parameters per input its bijection needs, the context
    size and the seed). Checked when it is made, so a bad option fails before any layer
    is built. Options as in [`MADE`][flowkit.nn.MADE].

    Args:
        hidden_dims: The hidden widths; ``None`` lets the builder choose
            ([`default_hidden_dims`][flowkit.nn.made.default_hidden_dims], or the
            builder's own ``hidden_dims`` argument).
        order: The autoregressive order of every step's MADE.
        degrees: ``"even"`` or ``"random"`` hidden degrees.
        activation: The hidden activation: a name, a module or a module class.
        skip_connections: Direct masked connections from inputs (and context) to outputs.
        residual: Residual hidden layers (needs equal widths).
        num_masks: The number of mask sets per MADE.
        on_lost_dependencies: ``"warn"`` or ``"raise"`` for layers too narrow to keep
            every dependency.

    Examples:
        >>> config = MADEConfig(hidden_dims=[16, 16], activation="tanh")
        >>> made = config.build(3, param_dims=[1, 1], seed=0)
        >>> made.hidden_dims, type(made.activation).__name__
        ([16, 16], 'Tanh')
    """

    hidden_dims: Sequence[int] | None = None
    order: str | Sequence[int] | Tensor = "natural"
    degrees: str = "even"
    activation: str | nn.Module | type[nn.Module] | Callable[[Tensor], Tensor] = "relu"
    skip_connections: bool = False
    residual: bool = False
    num_masks: int = 1
    on_lost_dependencies: str = "warn"

    def __post_init__(self):
        if self.hidden_dims is not None:
            object.__setattr__(self, "hidden_dims", tuple(_check_int_list(self.hidden_dims, "hidden_dims")))
            if self.residual and len(set(self.hidden_dims)) > 1:
                raise ValueError(f"hidden_dims: residual=True needs equal widths, got {list(self.hidden_dims)}")
        if self.degrees not in M.DEGREE_SCHEMES:
            raise ValueError(f"degrees: expected one of {M.DEGREE_SCHEMES}, got {self.degrees!r}")
        for name in ("skip_connections", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {type(getattr(self, name)).__name__}")
        M._check_positive_int(self.num_masks, "num_masks")
        if self.on_lost_dependencies not in ("warn", "raise"):
            raise ValueError(f"on_lost_dependencies: expected 'warn' or 'raise', got {self.on_lost_dependencies!r}")
        _activation(self.activation)  # raises for a bad one

    def replace(self, **changes) -> MADEConfig:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def build(
        self,
        input_dim: int,
        param_dims: Sequence[int],
        context_dim: int = 0,
        seed: int | torch.Generator | None = None,
    ) -> MADE:
        """A fresh [`MADE`][flowkit.nn.MADE] with these options, hidden widths
        [`default_hidden_dims`][flowkit.nn.made.default_hidden_dims] when ``hidden_dims`` is ``None``."""
        hidden_dims = default_hidden_dims(input_dim) if self.hidden_dims is None else list(self.hidden_dims)
        return MADE(
            input_dim,
            hidden_dims,
            param_dims,
            context_dim=context_dim,
            order=self.order,
            degrees=self.degrees,
            activation=self.activation,
            skip_connections=self.skip_connections,
            residual=self.residual,
            num_masks=self.num_masks,
            seed=seed,
            on_lost_dependencies=self.on_lost_dependencies,
        )

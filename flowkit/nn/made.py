r"""Masked linear layers and MADE, the masked autoregressive conditioner.

MADE (Germain et al., 2015) multiplies the weights of an autoencoder by binary masks,
\(h = g((W \odot M) x + b)\), so that the outputs for input \(x_d\) depend only
on the inputs that come before \(x_d\) in an order. One pass then gives the
parameters of every conditional \(p(x_d \mid x_{<d})\).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowkit._seeding import make_generator
from flowkit._validation import as_shape, broadcast_batch, check_context, check_int, check_int_list, check_tensor
from flowkit.nn import masks as M
from flowkit.nn.diagnostics import (  # LostDependencyWarning: also importable from here, as before
    LOST_DEPENDENCY_ACTIONS,
    LostDependencyWarning,
    input_connectivity,
    report_lost_dependencies,
)
from flowkit.nn import _workspace as workspace
from flowkit.nn._blocked import MaskBlocks
from flowkit.nn.layers import INITS, Activation, MaskedLinear, check_product, make_activation  # MaskedLinear: also from here
from flowkit.nn.sequential import SequentialPlan, Step, fast_sequential, naive_sequential

__all__ = ["MADE", "MADEConfig", "default_hidden_dims"]

SAMPLED = -1  # the active mask index while the layers hold masks drawn by MADE.resample_masks


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
    [`resample_masks`][flowkit.nn.made.MADE.resample_masks] draws a fresh order and
    connectivity instead, cheaply enough for every update (the paper's mask sampling).

    Args:
        input_dim: The number of inputs ``D``.
        hidden_dims: The widths of the hidden layers (at least one).
        param_dims: The number of parameters per input, per group, as in Pyro.
        context_dim: The size of the context (conditioning) input; 0 for none.
        order: ``"natural"``, ``"reversed"``, ``"random"`` or a permutation of
            ``range(D)`` listing the inputs in autoregressive order (see
            [`make_order`][flowkit.nn.masks.make_order]). With ``"random"`` every mask set
            gets its own order.
        degrees: Hidden-degree scheme, ``"even"``, ``"random"`` or ``"uniform"`` (the
            MADE paper's; see [`hidden_degrees`][flowkit.nn.masks.hidden_degrees]).
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
        init: How the masked layers are initialised: ``"uniform"`` (default) or
            ``"orthogonal"`` (the MADE paper's; see [`MaskedLinear`][flowkit.nn.layers.MaskedLinear]).
            Weights are drawn from torch's global generator, as `torch.nn.Linear` does.
        product: How every masked layer multiplies: ``"auto"`` (by blocks that skip the
            masks' all-False regions where that is predicted to be faster, see
            `MaskedProduct` (private module `flowkit.nn._blocked`)), ``"blocked"`` or
            ``"dense"``; the same results either way. The
            [`product`][flowkit.nn.made.MADE.product] attribute switches it later.

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
        activation: Activation = "relu",
        skip_connections: bool = False,
        residual: bool = False,
        num_masks: int = 1,
        seed: int | torch.Generator | None = None,
        on_lost_dependencies: str = "warn",
        init: str = "uniform",
        product: str = "auto",
    ):
        super().__init__()
        check_int(input_dim, "input_dim", type_error=True)
        hidden_dims = check_int_list(hidden_dims, "hidden_dims")
        param_dims = check_int_list(param_dims, "param_dims")
        check_int(context_dim, "context_dim", minimum=0)
        _check_structure_options(hidden_dims, degrees, residual, num_masks, on_lost_dependencies, init)
        check_product(product)
        self.input_dim = input_dim
        self.hidden_dims = hidden_dims
        self.param_dims = param_dims
        self.context_dim = context_dim
        self.residual = residual
        self.num_masks = num_masks

        generator = make_generator(seed)
        sets = [self._draw_degrees(order, degrees, generator) for _ in range(num_masks)]
        self._register_structure(sets)
        first, *middle, last, skip = self._mask_chain(*sets[0])
        self.input_layer = MaskedLinear(first, product=product, init=init)
        self.hidden_layers = nn.ModuleList(MaskedLinear(mask, product=product, init=init) for mask in middle)
        self.output_layer = MaskedLinear(last, product=product, init=init)
        self.skip_layer = MaskedLinear(skip, bias=False, product=product, init=init) if skip_connections else None
        self.context_layer = nn.Linear(context_dim, hidden_dims[0], bias=False) if context_dim else None
        self.context_skip_layer = (
            nn.Linear(context_dim, last.shape[0], bias=False) if context_dim and skip_connections else None
        )
        self.activation = make_activation(activation)
        lost = [self._lost_in(*degrees_of_set) for degrees_of_set in sets]
        report_lost_dependencies(lost, on_lost_dependencies, input_dim, hidden_dims, context_dim)

    def _register_structure(self, sets: list[tuple[Tensor, list[Tensor]]]) -> None:
        """Stores the mask sets' orders and hidden degrees (drawn on the CPU) as buffers where
        torch puts new tensors (``torch.set_default_device``), beside the parameters, and
        their Python copies, so that forward and sampling never read a buffer's value back
        from the device (and ``torch.compile`` sees constants)."""
        device = torch.empty(0).device
        self.register_buffer("orders", torch.stack([M.order_from_degrees(s[0]) for s in sets]).to(device))
        for layer in range(len(self.hidden_dims)):
            self.register_buffer(f"hidden_degrees_{layer}", torch.stack([s[1][layer] for s in sets]).to(device))
        self.register_buffer("mask_index", torch.zeros((), dtype=torch.long, device=device))
        self._active_mask = 0
        self._plans = [SequentialPlan.of(*s) for s in sets]
        self._sampled_plan: SequentialPlan | None = None  # built when the sequential pass needs it
        self._set_blocks: dict[int, list[MaskBlocks | None]] = {}  # see set_mask
        self.register_load_state_dict_pre_hook(_sampled_buffers_as_saved)
        self.register_load_state_dict_post_hook(_sync_after_load)

    # ----------------------------------------------------------------- structure
    def _draw_degrees(
        self, order, scheme: str, generator: torch.Generator, sort: bool = True
    ) -> tuple[Tensor, list[Tensor]]:
        """Input and hidden degrees of one structure (see [`draw_structure`][flowkit.nn.masks.draw_structure])."""
        # Degree-0 units see only the context; with no context they are useful only when D = 1.
        low = 0 if self.context_dim or self.input_dim == 1 else 1
        return M.draw_structure(self.input_dim, self.hidden_dims, generator, order, scheme, low, self.residual, sort)

    def degrees(self, index: int | None = None) -> list[Tensor]:
        """Degrees of the inputs and of each hidden layer for mask set ``index``
        (default: the active structure, resampled or not)."""
        if index is None and self._active_mask == SAMPLED:
            hidden = [getattr(self, f"sampled_hidden_degrees_{layer}") for layer in range(len(self.hidden_dims))]
            return [M.degrees_from_order(self.sampled_order), *hidden]
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
            return [layer.mask for layer in self._masked_layers()]
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
        return input_connectivity(chain, skip, self.residual, self.input_dim)

    def lost_dependencies(self, index: int | None = None) -> list[tuple[int, int]]:
        """The ``(input, output)`` pairs that the order allows but the masks of set
        ``index`` cannot connect (only when a hidden layer is narrower than ``D - 1``)."""
        input_degrees = self.degrees(index)[0]
        return M.lost_dependencies(self.connectivity(index), input_degrees, input_degrees)

    def _lost_in(self, input_degrees: Tensor, hidden: list[Tensor]) -> list[tuple[int, int]]:
        """The lost dependencies of the mask set with these (CPU) degrees, from the degrees
        alone (direct connections join every allowed pair)."""
        return [] if self.skip_layer is not None else M.lost_dependencies_of_degrees(input_degrees, hidden)

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
        # The blocked products' blocks of the set being left, found by its calls, and those
        # of the set coming back, found when it was last active: a switch per minibatch then
        # searches each set's blocks once, not at every switch (about 1 ms per layer).
        # A set whose degrees change must drop its entry of _set_blocks.
        if self._active_mask != SAMPLED:
            layers = self._masked_layers()
            self._set_blocks[self._active_mask] = [layer.product.known_blocks(layer.mask) for layer in layers]
        self._install_masks(self._masks(index), self._set_blocks.get(index))
        self.mask_index.fill_(index)
        self._active_mask = index

    def _install_masks(self, chain_and_skip: list[Tensor], blocks: list[MaskBlocks | None] | None = None) -> None:
        """Copies masks (input layer, hidden layers, output, skip) into the layers' buffers,
        handing each layer its mask's ``blocks`` when they are known."""
        layers = self._masked_layers()
        for layer, mask, known in zip(layers, self._used_masks(chain_and_skip), blocks or [None] * len(layers)):
            layer.set_mask(mask, known)

    def resample_masks(self, generator: torch.Generator, order: bool = True, sort: bool = False) -> None:
        """Draws a fresh structure from ``generator`` and puts its masks in the layers: the
        MADE paper's mask sampling, done before every update (``fit(resample_masks=...)``).

        Hidden degrees are the paper's iid ``"uniform"`` draw, unsorted by default (every
        unit's degree is fresh at every draw); ``sort=True`` sorts each layer's draw
        ascending, as the fixed mask sets are (the same degrees, so the same stream gives
        the unsorted draw's degrees sorted). ``order=True`` draws a new random order too (the
        paper's "Full" sampling), ``order=False`` keeps the active order ("Connectivity").
        The masks are made by comparisons and copied into the existing buffers (nothing is
        rebuilt, and no lost dependency is looked for: missing degrees are part of the
        method), and the structure is kept in buffers, so ``permutation``, ``degrees()``,
        ``masks()``, the ``state_dict`` and ``DistributedDataParallel`` see it. ``active_mask``
        is then -1; [`set_mask`][flowkit.nn.made.MADE.set_mask] goes back to a fixed set.

        Examples:
            >>> made = MADE(4, [8], order="random", seed=0)
            >>> made.resample_masks(torch.Generator().manual_seed(1), sort=True)
            >>> made.active_mask, sorted(made.permutation.tolist()), bool((made.degrees()[1].diff() >= 0).all())
            (-1, [0, 1, 2, 3], True)
        """
        if not isinstance(sort, bool):
            raise ValueError(f"sort: expected a bool, got {sort!r}")
        kept = self.permutation.cpu() if not order else "random"
        input_degrees, hidden = self._draw_degrees(kept, "uniform", generator, sort=sort)
        self._add_sampled_buffers()
        # Unsorted units leave no all-False blocks worth skipping: the dense product, no
        # search. Sorted units do, so their layers find the blocks on their next blocked call.
        layers = self._masked_layers()
        blocks = None if sort else [MaskBlocks.whole(tuple(layer.mask.shape)) for layer in layers]
        self._install_masks(self._mask_chain(input_degrees, hidden), blocks)
        self.sampled_order.copy_(M.order_from_degrees(input_degrees))
        for layer, degrees in enumerate(hidden):
            getattr(self, f"sampled_hidden_degrees_{layer}").copy_(degrees)
        self.mask_index.fill_(SAMPLED)
        self._active_mask = SAMPLED
        self._sampled_plan = None

    @contextmanager
    def preserving_masks(self) -> Iterator[None]:
        """Inside the block, masks may change (``set_mask``, ``resample_masks``); after it,
        the layers hold the masks, and the MADE the structure, from before again.

        Examples:
            >>> made = MADE(3, [8], num_masks=2, order="random", seed=0)
            >>> with made.preserving_masks():
            ...     made.set_mask(1)
            >>> made.active_mask
            0
        """
        layers = self._masked_layers()
        masks = [layer.mask.clone() for layer in layers]
        had_sampled = self._has_sampled_buffers()
        sampled = {name: getattr(self, name).clone() for name in self._sampled_buffer_names()} if had_sampled else {}
        active, plan = self._active_mask, self._sampled_plan
        try:
            yield
        finally:
            for layer, mask in zip(layers, masks):
                layer.set_mask(mask)
            for name, saved in sampled.items():
                getattr(self, name).copy_(saved)
            if not had_sampled:
                self._drop_sampled_buffers()
            self.mask_index.fill_(active)
            self._active_mask, self._sampled_plan = active, plan

    def _masked_layers(self) -> list[MaskedLinear]:
        """The layers that hold masks: input layer, hidden layers, output, skip."""
        skip = [self.skip_layer] if self.skip_layer is not None else []
        return [self.input_layer, *self.hidden_layers, self.output_layer, *skip]

    # The structure resample_masks drew last lives in buffers (so that permutation, the
    # state_dict and DistributedDataParallel see it), registered at the first draw only:
    # the state_dict of a MADE that never resampled keeps the keys it always had.
    def _sampled_buffer_names(self) -> list[str]:
        return ["sampled_order", *(f"sampled_hidden_degrees_{layer}" for layer in range(len(self.hidden_dims)))]

    def _has_sampled_buffers(self) -> bool:
        return "sampled_order" in self._buffers

    def _add_sampled_buffers(self) -> None:
        if self._has_sampled_buffers():
            return
        device = self.mask_index.device
        self.register_buffer("sampled_order", torch.zeros(self.input_dim, dtype=torch.long, device=device))
        for layer, width in enumerate(self.hidden_dims):
            self.register_buffer(f"sampled_hidden_degrees_{layer}", torch.zeros(width, dtype=torch.long, device=device))

    def _drop_sampled_buffers(self) -> None:
        for name in self._sampled_buffer_names():
            self._buffers.pop(name, None)

    def next_mask(self) -> int:
        """Activates the next mask set (cyclically) and returns its index."""
        index = (self._active_mask + 1) % self.num_masks
        self.set_mask(index)
        return index

    def sync_from_buffers(self) -> None:
        """Refreshes the Python copies of the structure (the active mask set, the plans of
        the sequential pass) after its buffers were overwritten: ``load_state_dict`` calls
        it, and so does [`fit`][flowkit.training.fit] after ``DistributedDataParallel``
        copied rank 0's buffers."""
        self._active_mask = int(self.mask_index)
        self._set_blocks = {}  # the masks may be others now
        self._plans = []
        for index in range(self.num_masks):
            input_degrees, *hidden = self.degrees(index)
            self._plans.append(SequentialPlan.of(input_degrees, hidden))
        self._sampled_plan = None

    def _active_plan(self) -> SequentialPlan:
        """The sequential plan of the active structure (a resampled one's is built once, here)."""
        if self._active_mask != SAMPLED:
            return self._plans[self._active_mask]
        if self._sampled_plan is None:
            input_degrees, *hidden = self.degrees()
            self._sampled_plan = SequentialPlan.of(input_degrees, hidden)
        return self._sampled_plan

    @property
    def active_mask(self) -> int:
        """The index of the active mask set (the ``mask_index`` buffer, as a Python int);
        -1 while the masks are those [`resample_masks`][flowkit.nn.made.MADE.resample_masks] drew."""
        return self._active_mask

    @property
    def permutation(self) -> Tensor:
        """The active order: ``permutation[k]`` is the input that comes ``k``-th (Pyro's
        attribute, read by its transforms to invert)."""
        return self.sampled_order if self._active_mask == SAMPLED else self.orders[self._active_mask]

    def get_permutation(self) -> Tensor:
        """The active order, as Pyro's `AutoRegressiveNN.get_permutation`."""
        return self.permutation

    @property
    def product(self) -> str:
        """How the masked layers multiply, ``"auto"``, ``"blocked"`` or ``"dense"`` (see the
        ``product`` argument); setting it sets every layer's."""
        return self.input_layer.product.method

    @product.setter
    def product(self, product: str) -> None:
        check_product(product)
        for layer in self._masked_layers():
            layer.product.method = product

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the parameters, which inputs and contexts must have."""
        return self.output_layer.weight.dtype

    def scale_outputs_(self, scale: float) -> MADE:
        """Multiplies the weights into the outputs (the output layer's, and the direct
        connections' from inputs and context) by ``scale`` and zeros the output bias, in
        place and without gradients, so that the outputs start near zero; returns the MADE."""
        with torch.no_grad():
            self.output_layer.weight.mul_(scale)
            self.output_layer.bias.zero_()
            for layer in (self.skip_layer, self.context_skip_layer):
                if layer is not None:
                    layer.weight.mul_(scale)
        return self

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, x: Tensor, context: Tensor | None) -> None:
        check_tensor(x, "x", self.input_dim, "input_dim", self.dtype)
        check_context(context, self.context_dim, "this MADE", self.dtype)
        if context is not None:
            broadcast_batch(context, x.shape[:-1], "x's batch shape")

    def raw_output(self, x: Tensor, context: Tensor | None = None, *, check: bool = True) -> Tensor:
        """All parameters as one tensor of shape ``(..., sum(param_dims), D)``.

        ``check=False`` skips the checks of ``x`` and ``context``, for callers that made
        them once already (a transform at its entry, before a loop of passes).

        On the CPU, where nothing can see the layers' calls (no hooks, no context), the pass
        runs feature-major, with blocked products on contiguous slabs and, without
        gradients, reused buffers for the hidden activations (the private module
        `flowkit.nn._workspace`); the results are the same."""
        if check:
            self._check_inputs(x, context)
        if workspace.applies(self, x, context):
            return workspace.feature_major_output(self, x)
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
        step: Step,
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
        ``method="naive"`` runs a full forward pass per input; it is the reference
        (both live in [`flowkit.nn.sequential`][flowkit.nn.sequential]).

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
        check_context(context, self.context_dim, "this MADE", self.dtype)
        if context is not None:
            batch_shape = broadcast_batch(context, batch_shape, "batch_shape")
        if method == "fast":
            # The fast path reads weights directly; one call on zero rows goes through every
            # layer's __call__, so a MADE converted to a PyroModule registers its parameters.
            no_rows = None if context is None else context.reshape(-1, self.context_dim)[:0]
            self.raw_output(self.output_layer.weight.new_zeros(0, self.input_dim), no_rows, check=False)
            return fast_sequential(self, self._active_plan(), step, batch_shape, context)
        if method == "naive":
            zeros = self.output_layer.weight.new_zeros(batch_shape + (self.input_dim,))
            order = self._active_plan().order
            return naive_sequential(lambda x: self.raw_output(x, context, check=False), order, step, zeros)
        raise ValueError(f"method: expected 'fast' or 'naive', got {method!r}")


def _sampled_buffers_as_saved(made: MADE, state_dict: dict, prefix: str, *args: object) -> None:
    """``load_state_dict``'s pre hook: the MADE holds the buffers of a resampled structure
    exactly when the saved state does, so that loading is strict both ways."""
    if prefix + "sampled_order" in state_dict:
        made._add_sampled_buffers()
    else:
        made._drop_sampled_buffers()


def _sync_after_load(made: MADE, incompatible_keys: object) -> None:
    """``load_state_dict``'s post hook (a module-level function, so that a MADE pickles)."""
    made.sync_from_buffers()


def _check_structure_options(
    hidden_dims: Sequence[int], degrees: str, residual: bool, num_masks: int, on_lost_dependencies: str, init: str
) -> None:
    """The checks that [`MADE`][flowkit.nn.MADE] and [`MADEConfig`][flowkit.nn.MADEConfig] share."""
    check_int(num_masks, "num_masks", type_error=True)
    if degrees not in M.DEGREE_SCHEMES:
        raise ValueError(f"degrees: expected one of {M.DEGREE_SCHEMES}, got {degrees!r}")
    if residual and len(set(hidden_dims)) > 1:
        raise ValueError(f"hidden_dims: residual=True needs equal widths, got {list(hidden_dims)}")
    if on_lost_dependencies not in LOST_DEPENDENCY_ACTIONS:
        raise ValueError(f"on_lost_dependencies: expected 'warn' or 'raise', got {on_lost_dependencies!r}")
    if init not in INITS:
        raise ValueError(f"init: expected one of {INITS}, got {init!r}")


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
        init: ``"uniform"`` or ``"orthogonal"`` initialisation of the masked layers.
        product: ``"auto"``, ``"blocked"`` or ``"dense"``: how the masked layers multiply.

    Examples:
        >>> config = MADEConfig(hidden_dims=[16, 16], activation="tanh")
        >>> made = config.build(3, param_dims=[1, 1], seed=0)
        >>> made.hidden_dims, type(made.activation).__name__
        ([16, 16], 'Tanh')
    """

    hidden_dims: Sequence[int] | None = None
    order: str | Sequence[int] | Tensor = "natural"
    degrees: str = "even"
    activation: Activation = "relu"
    skip_connections: bool = False
    residual: bool = False
    num_masks: int = 1
    on_lost_dependencies: str = "warn"
    init: str = "uniform"
    product: str = "auto"

    def __post_init__(self):
        if self.hidden_dims is not None:
            object.__setattr__(self, "hidden_dims", tuple(check_int_list(self.hidden_dims, "hidden_dims")))
        for name in ("skip_connections", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {type(getattr(self, name)).__name__}")
        widths = self.hidden_dims or ()
        _check_structure_options(
            widths, self.degrees, self.residual, self.num_masks, self.on_lost_dependencies, self.init
        )
        make_activation(self.activation)  # raises for a bad one
        check_product(self.product)

    def replace(self, **changes) -> MADEConfig:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls, conditioner: MADEConfig | None, hidden_dims: Sequence[int] | None = None) -> MADEConfig:
        """The config a builder uses: ``conditioner`` (default ``MADEConfig()``) with the
        builder's convenience argument ``hidden_dims`` filled in, which may not contradict
        the config's own.

        Raises:
            TypeError: When ``conditioner`` is neither a ``MADEConfig`` nor ``None``.
            ValueError: When ``hidden_dims`` is given both ways.

        Examples:
            >>> MADEConfig.resolve(MADEConfig(activation="tanh"), [8]).hidden_dims
            (8,)
            >>> MADEConfig.resolve(None).hidden_dims is None
            True
        """
        if conditioner is None:
            conditioner = cls()
        if not isinstance(conditioner, MADEConfig):
            raise TypeError(f"conditioner: expected a flowkit.nn.MADEConfig or None, got {type(conditioner).__name__}")
        if hidden_dims is None:
            return conditioner
        if conditioner.hidden_dims is not None:
            raise ValueError(
                "hidden_dims: given both as hidden_dims= and in conditioner=MADEConfig(hidden_dims=...); give one"
            )
        return conditioner.replace(hidden_dims=hidden_dims)

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
            init=self.init,
            product=self.product,
        )

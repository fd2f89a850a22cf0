"""The layers a [`MADE`][flowkit.nn.MADE] is made of: [`MaskedLinear`][flowkit.nn.layers.MaskedLinear]
and the hidden activations, by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.nn._blocked import METHODS, MaskBlocks, MaskedProduct

__all__ = ["MaskedLinear", "check_product", "make_activation"]

INITS = ("uniform", "orthogonal")

Activation = str | nn.Module | type[nn.Module] | Callable[[Tensor], Tensor]


class _InPlaceActivation(nn.Module):
    """``relu``, ``elu`` or ``leaky_relu``, applied in place. Their gradients are computed
    from their outputs, so overwriting a pre-activation that nothing else reads is safe,
    and saves a (batch, width) allocation per layer. Not on a view (an unbatched input's
    layer output is one), where autograd would record a copy into the viewed tensor that
    costs more in the backward pass than the allocation saves, not under a TorchScript
    trace (Pyro's ``JitTrace_ELBO``), whose optimised graphs reject in-place ops on some
    views, and not under ``torch.compile``."""

    def __init__(self, function: Callable[..., Tensor]):
        super().__init__()
        self.function = function

    def forward(self, h: Tensor) -> Tensor:
        # torch.compile functionalises in-place ops anyway (and cannot trace _is_view).
        traced = torch.jit.is_tracing() or torch.compiler.is_compiling()
        return self.function(h, inplace=not (traced or h._is_view()))

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


class MaskedLinear(nn.Linear):
    r"""A linear layer whose weight is multiplied by a fixed boolean mask,
    \(y = (W \odot M) x + b\).

    The mask is a registered buffer, so it follows ``.to()``, ``.double()``, the
    ``state_dict`` and pickling.

    The product runs through a `MaskedProduct` (private module `flowkit.nn._blocked`)
    (the ``product`` attribute, not part of the ``state_dict``): by blocks that skip the
    mask's all-False regions when that is predicted to be faster, else as one dense
    multiply, with the same results either way.

    Args:
        mask: A boolean tensor of shape ``(out_features, in_features)``.
        bias: Whether to add a bias.
        product: ``"auto"`` (default), ``"blocked"`` or ``"dense"``; switch later with
            ``layer.product.method = ...``.
        init: ``"uniform"`` (default): like `torch.nn.Linear`, but with each unit's fan-in
            counted after masking, so sparse rows are not initialised too small.
            ``"orthogonal"``: the MADE paper's initialisation, an orthogonal weight
            (orthonormal rows or columns, whichever are fewer) and zero biases. It is not
            rescaled by the masked fan-in: the mask changes when masks are resampled, and
            the rescaled variant trained worse on the paper's datasets.
        generator: The random generator for the weights (torch's global one when ``None``).

    Examples:
        >>> layer = MaskedLinear(torch.tensor([[True, False], [True, True]]))
        >>> layer(torch.ones(2)).shape
        torch.Size([2])
        >>> layer.product
        MaskedProduct(method='auto', max_blocks=8)
    """

    def __init__(
        self,
        mask: Tensor,
        bias: bool = True,
        product: str = "auto",
        init: str = "uniform",
        generator: torch.Generator | None = None,
    ):
        check_product(product)
        if init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {init!r}")
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.init = init
        self.register_buffer("mask", mask.to(self.weight.device, torch.bool, copy=True))
        self.product = MaskedProduct(product)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draws the weights and biases again, the ``init`` way, from ``generator``."""
        if not hasattr(self, "mask"):  # nn.Linear.__init__ calls this before the mask exists
            return
        with torch.no_grad():
            if self.init == "orthogonal":
                nn.init.orthogonal_(self.weight, generator=generator)
                if self.bias is not None:
                    self.bias.zero_()
                return
            fan_in = self.mask.sum(dim=1, keepdim=True).clamp(min=1).to(self.weight.dtype)
            bound = 1.0 / fan_in.sqrt()
            self.weight.uniform_(-1.0, 1.0, generator=generator).mul_(bound)
            if self.bias is not None:
                self.bias.uniform_(-1.0, 1.0, generator=generator).mul_(bound.squeeze(1))

    def set_mask(self, mask: Tensor, blocks: MaskBlocks | None = None) -> None:
        """Replaces the mask in place (same shape). ``blocks``, the
        `MaskBlocks` (`flowkit.nn._blocked`) of this very mask found before,
        spares the blocked product the search (about 1 ms for a 512-wide layer); without
        them it searches again on its next blocked call."""
        self.mask.copy_(mask)
        if blocks is not None:
            self.product.remember(self.mask, blocks)

    def masked_weight(self) -> Tensor:
        r"""The effective weight \(W \odot M\)."""
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return self.product(x, self.weight, self.mask, self.bias)


def check_product(product: object) -> None:
    """Checks a ``product`` argument of a masked layer or a MADE."""
    if not isinstance(product, str) or product not in METHODS:
        raise ValueError(f"product: expected one of {METHODS}, got {product!r}")


def make_activation(activation: Activation) -> nn.Module | Callable[[Tensor], Tensor]:
    """The activation module for a name, a module (used as it is), a module class (made
    with no arguments) or a callable; a clear error for anything else."""
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        return ACTIVATIONS[activation]()
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    if callable(activation):
        return activation
    raise TypeError(f"activation: expected a name, a module or a callable, got {type(activation).__name__}")

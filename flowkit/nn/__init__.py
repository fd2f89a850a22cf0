"""Neural building blocks: mask construction, masked layers and MADE."""

from flowkit.nn import masks
from flowkit.nn.diagnostics import LostDependencyWarning
from flowkit.nn.layers import MaskedLinear
from flowkit.nn.made import MADE, MADEConfig, default_hidden_dims

__all__ = ["MADE", "LostDependencyWarning", "MADEConfig", "MaskedLinear", "default_hidden_dims", "masks"]

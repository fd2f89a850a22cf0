"""Neural building blocks: mask construction and MADE."""

from flowkit.nn import masks
from flowkit.nn.made import MADE, LostDependencyWarning, MADEConfig, MaskedLinear, default_hidden_dims

__all__ = ["MADE", "LostDependencyWarning", "MADEConfig", "MaskedLinear", "default_hidden_dims", "masks"]

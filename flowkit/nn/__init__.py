"""Neural building blocks: mask construction and MADE."""

from flowkit.nn import masks
from flowkit.nn.made import MADE, LostDependencyWarning, MaskedLinear

__all__ = ["MADE", "LostDependencyWarning", "MaskedLinear", "masks"]

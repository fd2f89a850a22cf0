"""flowkit: normalizing flows for PyTorch and Pyro, built on MADE."""

from flowkit.checks import AutoregressiveReport, check_autoregressive
from flowkit.nn import MADE, LostDependencyWarning, MaskedLinear, masks

__version__ = "0.1.0"

__all__ = [
    "MADE",
    "AutoregressiveReport",
    "LostDependencyWarning",
    "MaskedLinear",
    "check_autoregressive",
    "masks",
]

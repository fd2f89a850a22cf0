"""flowkit: normalizing flows for PyTorch and Pyro, built on MADE."""

from flowkit import transforms
from flowkit.checks import AutoregressiveReport, check_autoregressive
from flowkit.distributions import Flow, iaf, maf
from flowkit.nn import MADE, LostDependencyWarning, MaskedLinear, masks

__version__ = "0.1.0"

__all__ = [
    "MADE",
    "AutoregressiveReport",
    "Flow",
    "LostDependencyWarning",
    "MaskedLinear",
    "check_autoregressive",
    "iaf",
    "maf",
    "masks",
    "transforms",
]

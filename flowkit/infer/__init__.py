"""Variational inference: flow autoguides and amortized flow posteriors."""

from flowkit.infer.amortized import AmortizedIAF
from flowkit.infer.autoguides import AutoIAF, AutoMAF

__all__ = ["AmortizedIAF", "AutoIAF", "AutoMAF"]

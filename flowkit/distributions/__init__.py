"""Distributions: flow builders (and, later, MADE density models)."""

from flowkit.distributions.flows import Flow, iaf, maf

__all__ = ["Flow", "iaf", "maf"]

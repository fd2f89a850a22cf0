"""Shared pytest configuration for the flowkit test suite.

Helpers that several test files need live in each file (they are a few lines each);
this file only holds fixtures and the Hypothesis profile.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Hypothesis defaults for the whole suite: few examples (the suite must stay fast on
# 2 CPU cores), no per-example deadline (Jacobians of a 30-input MADE take a while on
# the first call) and derandomized, so every run tries the same examples and the pass/fail
# counts are reproducible. Tests that use @given also say so explicitly.
# HYPOTHESIS_PROFILE=explore draws fresh random examples on every run, to hunt for bugs.
settings.register_profile(
    "flowkit",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("explore", parent=settings.get_profile("flowkit"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "flowkit"))

# The tests use tiny tensors: intra-op threads only add synchronisation, and on a busy
# 2-core machine they made the sequential-pass tests about 10x slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same global torch RNG state, so weight
    initialisation (which uses the global generator) is reproducible."""
    torch.manual_seed(0)


@pytest.fixture
def float64_default():
    """Makes float64 the default dtype for one test.

    Pyro's autoregressive inverse builds its starting point with ``torch.zeros(...)``
    in the default dtype, so float64 checks of Pyro transforms need it.
    """
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)

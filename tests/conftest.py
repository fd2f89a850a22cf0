"""Shared pytest configuration for the flowkit test suite: the Hypothesis profile, one
torch thread, and the fixtures several test files use (a seeded torch RNG for every test,
float64 as the default dtype, a clean Pyro parameter store, a counter of MADE passes).

Plain helper functions that several test files share live in ``helpers.py`` (and the MADE
ones in ``made_helpers.py`` and ``made_models_helpers.py``); a file opts into a fixture
that is not autouse with ``pytestmark = pytest.mark.usefixtures(...)`` or an argument.
"""

import os

import pyro
import pytest
import torch
from hypothesis import HealthCheck, settings

from flowkit.nn import MADE

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


@pytest.fixture
def clean_param_store():
    """Empties Pyro's global parameter store before and after a test, so guides and
    modules of one test never see parameters another test left behind."""
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


class PassCounter:
    """Counts MADE passes: one-pass calls (raw_output) and sequential sweeps. The fast
    sequential method does not call raw_output for every row, so sweeps are counted
    separately; the one zero-row raw_output call with which it starts counts as a pass."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.raw_output = self.sequential = 0

    @property
    def counts(self):
        return self.raw_output, self.sequential


@pytest.fixture
def made_passes(monkeypatch):
    """A PassCounter that counts every ``MADE.raw_output`` and ``MADE.sequential`` call
    of the test (by patching the class)."""
    counter = PassCounter()
    raw_output, sequential = MADE.raw_output, MADE.sequential

    def counting_raw_output(self, *args, **kwargs):
        counter.raw_output += 1
        return raw_output(self, *args, **kwargs)

    def counting_sequential(self, *args, **kwargs):
        counter.sequential += 1
        return sequential(self, *args, **kwargs)

    monkeypatch.setattr(MADE, "raw_output", counting_raw_output)
    monkeypatch.setattr(MADE, "sequential", counting_sequential)
    return counter

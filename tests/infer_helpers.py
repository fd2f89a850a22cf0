"""Helpers shared by the guide test files (test_infer*.py): small Pyro models with unconstrained
and constrained sites, building a guide by name, a log-determinant by autograd, and quiet_jit
(also used by test_path_derivative.py)."""

import contextlib
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import JitTrace_ELBO, Trace_ELBO

from flowkit.infer import AutoIAF, AutoMAF

GUIDES = {"AutoIAF": AutoIAF, "AutoMAF": AutoMAF}


def gaussian_model():
    """Four unconstrained latent coordinates: a 3-vector and a positive scalar."""
    a = pyro.sample("a", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    s = pyro.sample("s", dist.LogNormal(torch.tensor(0.0), 1.0))
    pyro.sample("y", dist.Normal(a.sum() + s, 1.0), obs=torch.tensor(1.5))


CONSTRAINED_DATA = [0.3, 0.9, 0.7, 0.2, 0.5, 1.1]


def constrained_model():
    """Sites on R, (0, inf), (0, 1) and the 3-simplex."""
    data = torch.tensor(CONSTRAINED_DATA)
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    s = pyro.sample("s", dist.HalfNormal(1.0))
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    w = pyro.sample("w", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("data", len(data)):
        pyro.sample("y", dist.Normal(mu + p * w[0], s), obs=data)


def make_guide(kind, model=gaussian_model, stable=False, **kwargs):
    options = dict(num_transforms=2, hidden_dims=[8], bijection="gated" if stable else "affine")
    return GUIDES[kind](model, **{**options, **kwargs})


def latent_site(guide):
    """The distribution and value of the guide's latent site, from one trace."""
    site = pyro.poutine.trace(guide).get_trace().nodes[f"_{guide._pyro_name}_latent"]
    return site["fn"], site["value"]


def log_det_by_autograd(fn, x):
    """Per-row log |det d fn(x) / dx| for a row-wise map of ``x`` of shape ``(N, D)``."""
    jacobian = torch.autograd.functional.jacobian(fn, x)  # (N, D, N, D)
    rows = range(x.shape[0])
    return torch.stack([torch.linalg.slogdet(jacobian[i, :, i, :])[1] for i in rows])


@contextlib.contextmanager
def quiet_jit():
    """torch.jit.trace warns about traced Python control flow and its own deprecation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=DeprecationWarning)
        yield


def assert_jit_elbo_matches_trace_elbo(model, guide, seeds=(3, 4)):
    """``JitTrace_ELBO`` gives ``Trace_ELBO``'s loss for ``guide`` at each of ``seeds``,
    after one call that compiles it."""
    jit_elbo, elbo = JitTrace_ELBO(), Trace_ELBO()
    with quiet_jit():
        jit_elbo.loss_and_grads(model, guide)  # compiles
        for seed in seeds:
            torch.manual_seed(seed)
            expected = elbo.loss_and_grads(model, guide)
            torch.manual_seed(seed)
            actual = jit_elbo.loss_and_grads(model, guide)
            assert actual == pytest.approx(expected, rel=1e-5, abs=1e-4)

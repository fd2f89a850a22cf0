"""Every flowkit module follows its device and dtype.

Three checks of the whole public surface (MADE, checks, transforms, flows, MADE density
models, fit, guides):

* it runs on every available device (the CPU; CUDA when present, skipped otherwise), in
  float32 and float64, and every tensor it returns lives on that device with that dtype;
* it runs with the models and data on the CPU while torch's default device is ``meta``:
  a tensor made inside a forward pass, sampling or inversion without an explicit device
  would land on ``meta`` and fail to mix with the CPU tensors (or come back on ``meta``);
* models built under ``torch.device(...)`` (what ``torch.set_default_device`` does) hold
  every parameter and buffer there, masks and orders included.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

import flowkit
from flowkit.infer import AmortizedIAF, AutoIAF, AutoMAF

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
DTYPES = [torch.float32, torch.float64]


def build_models() -> dict[str, torch.nn.Module]:
    """One of each kind of model, seeded, where torch puts new tensors."""
    torch.manual_seed(0)
    models = {
        "made": flowkit.MADE(4, [12, 12], [1, 1], context_dim=2, skip_connections=True, num_masks=2, seed=0),
        "residual_made": flowkit.MADE(3, [8, 8], [2], residual=True, order="random", seed=1),
        "maf": flowkit.maf(3, num_transforms=2, hidden_dims=[8], batch_norm=True, act_norm=True, seed=0),
        "maf_mog": flowkit.maf(3, num_transforms=2, hidden_dims=[8], base="mog", num_components=2, seed=0),
        "conditional_maf": flowkit.maf(3, num_transforms=2, hidden_dims=[8], context_dim=2, seed=0),
        "iaf": flowkit.iaf(3, num_transforms=2, hidden_dims=[8], bijection="gated", permutation="random", seed=0),
        "conditional_iaf": flowkit.iaf(3, num_transforms=2, hidden_dims=[8], context_dim=2, seed=0),
        "bernoulli": flowkit.BernoulliMADE(4, [8], conditioner=flowkit.MADEConfig(num_masks=2, order="random"), seed=0),
        "gaussian": flowkit.GaussianMADE(3, [8], context_dim=2, seed=0),
        "mixture": flowkit.MixtureMADE(3, [8], num_components=2, seed=0),
        "categorical": flowkit.CategoricalMADE(4, [8], num_classes=3, seed=0),
        "amortized": AmortizedIAF(2, context_dim=3, num_transforms=2, hidden_dims=[8]),
    }
    return models


def build_models_on(device: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    return {name: model.to(device, dtype) for name, model in build_models().items()}


def use_models(models: dict, device: str, dtype: torch.dtype) -> list[torch.Tensor]:
    """Runs every public method of the models on data made on ``device``; returns what they give."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, device="cpu").to(device, dtype)

    x3, x4, ctx = randn(6, 3), randn(6, 4), randn(6, 2)
    outputs = []

    made = models["made"]
    outputs += [*made(x4, ctx), made.raw_output(x4, ctx)]
    for method in ("fast", "naive"):
        outputs += list(made.sequential(lambda p, i: p[..., 0] + 1.0, (6,), ctx, method=method))
    made.next_mask()
    outputs += [made.raw_output(x4, ctx), made.connectivity(), made.permutation]
    assert flowkit.check_autoregressive(made, num_points=2).ok
    assert made.lost_dependencies() == []
    residual = models["residual_made"]
    outputs += [residual(x3), residual.sequential(lambda p, i: p[..., 1], (6,))[0]]

    for name in ("maf", "maf_mog", "iaf"):
        flow = models[name]
        flow.train()
        outputs += [flow.log_prob(x3)]  # training mode: batch statistics, ActNorm initialisation
        flow.eval()
        outputs += [flow.log_prob(x3), flow.sample((5,)), flow(None).sample((2,))]
        if name != "maf_mog":
            outputs += [flow.rsample((5,)), *flow.rsample_and_log_prob((5,))]
    for name in ("conditional_maf", "conditional_iaf"):
        flow = models[name]
        outputs += [flow.log_prob(x3, ctx), flow.sample((2,), ctx), *flow.rsample_and_log_prob((), ctx)]

    binary = (x4 > 0).to(dtype)
    classes = (x4 > 0).long() + (x4 > 1).long()
    observed = torch.tensor([True, True, False, False], device=device)
    for name, data, context in (
        ("bernoulli", binary, None),
        ("gaussian", x3, ctx),
        ("mixture", x3, None),
        ("categorical", classes, None),
    ):
        model = models[name]
        outputs += [model.log_prob(data, context), model.sample((5,), context), model(context).sample()]
        outputs += [model.log_prob_ensemble(data, context)]
        if data.shape[-1] == 4:
            outputs += [model.complete(data, observed, method="sample"), model.complete(data, observed, method="mode")]
            assert isinstance(model.is_exact_completion(observed), bool)

    flow = models["maf"]
    history = flowkit.fit(flow, randn(64, 3), randn(16, 3), epochs=2, batch_size=16, progress=False, seed=0)
    assert len(history.valid_nll) == 2
    outputs += [flow.log_prob(x3)]
    history = flowkit.fit(models["bernoulli"], binary, epochs=1, batch_size=3, cycle_masks=True, progress=False)
    assert history.steps == 2
    cpu_rows = torch.randn(32, 3, generator=g, dtype=dtype, device="cpu")  # moved to the model's device per batch
    history = flowkit.fit(flow, cpu_rows, cpu_rows[:8], epochs=1, batch_size=16, progress=False)
    assert history.steps == 2 and math.isfinite(history.valid_nll[0])
    assert math.isfinite(flowkit.training.mean_nll(flow, cpu_rows))

    posterior = models["amortized"](randn(6, 2), randn(6, 2).exp(), randn(6, 3))
    z = posterior.rsample()
    outputs += [z, posterior.log_prob(z)]
    return outputs


def use_guides(device: str, dtype: torch.dtype) -> list[torch.Tensor]:
    """A few SVI steps with each flowkit autoguide, then its median and quantiles."""
    outputs = []
    data = torch.tensor([0.5, -1.0, 2.0], device=device, dtype=dtype)

    def model():
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2, device=device, dtype=dtype), 1.0).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(torch.zeros((), device=device, dtype=dtype), 1.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc.sum(), scale), obs=data)

    for guide_class in (AutoIAF, AutoMAF):
        pyro.clear_param_store()
        guide = guide_class(model, num_transforms=2, hidden_dims=[8])
        svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
        for _ in range(2):
            svi.step()
        outputs += list(guide().values()) + list(guide.median(num_samples=20).values())
        outputs += list(guide.quantiles([0.25, 0.75], num_samples=20).values())
    return outputs


def assert_on(tensors: list[torch.Tensor], device: str, dtype: torch.dtype) -> None:
    for t in tensors:
        assert t.device.type == device, f"a {tuple(t.shape)} tensor is on {t.device}, expected {device}"
        if t.is_floating_point():
            assert t.dtype == dtype, f"a {tuple(t.shape)} tensor has dtype {t.dtype}, expected {dtype}"
            assert torch.isfinite(t).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_public_surface_follows_device_and_dtype(device, dtype):
    models = build_models_on(device, dtype)
    for model in models.values():
        assert_on([*model.parameters(), *model.buffers()], device, dtype)
    assert_on(use_models(models, device, dtype), device, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_guides_follow_the_model_device(device):
    assert_on(use_guides(device, torch.float32), device, torch.float32)


def test_nothing_is_made_on_the_default_device():
    """Models and data on the CPU, default device ``meta``: every tensor flowkit makes
    inside forward, sampling, inversion, fitting and guides must follow its inputs."""
    models = build_models_on("cpu", torch.float64)
    with torch.device("meta"):
        outputs = use_models(models, "cpu", torch.float64) + use_guides("cpu", torch.float64)
    assert_on(outputs, "cpu", torch.float64)


@pytest.mark.parametrize("device", ["meta", *DEVICES])
def test_models_built_under_a_default_device_live_there(device):
    with torch.device(device):
        models = build_models()
    for name, model in models.items():
        for key, tensor in [*model.named_parameters(), *model.named_buffers()]:
            assert tensor.device.type == device, f"{name}.{key} is on {tensor.device}, expected {device}"


def test_datasets_are_made_on_the_cpu_whatever_the_default_device(tmp_path):
    np.savez(tmp_path / "tiny.npz", train=np.ones((3, 2)), valid=np.zeros((1, 2)), test=np.ones((1, 2)))
    with torch.device("meta"):
        splits = [flowkit.datasets.load_digits(), flowkit.datasets.load_made_uci(tmp_path / "tiny.npz")]
        tensors = [flowkit.datasets.toy_2d(name, 8) for name in flowkit.datasets.TOY_2D]
        tensors += list(flowkit.datasets.load_faces())
    tensors += [part for split in splits for part in (split.train, split.valid, split.test)]
    assert_on(tensors, "cpu", torch.float32)

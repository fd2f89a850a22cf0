"""``torch.compile`` traces flowkit's hot paths whole.

``fullgraph=True`` turns any graph break into an error, so these tests prove there is
none in ``log_prob``, sampling, and a training step (the loss forward and backward) of
MAF, IAF and the MADE density models. The ``aot_eager`` backend traces the forward and
backward graphs with AOTAutograd, as the default inductor backend does, but skips code
generation, which takes tens of seconds per graph on two CPU cores (the benchmark in
``benchmarks/compile.py`` compiles with inductor and times it). The compiled functions
must give the eager results: the same values, the same gradients, the same samples from
the same seed.
"""

from __future__ import annotations

import pytest
import torch

import flowkit
from flowkit import MADEConfig

TOL = dict(rtol=1e-6, atol=1e-6)
FLOWS = {
    "maf_batch_norm_act_norm": lambda: flowkit.maf(3, 2, [8], batch_norm=True, act_norm=True, seed=0),
    "maf_mog": lambda: flowkit.maf(3, 2, [8], base="mog", num_components=2, seed=0),
    "iaf_stable": lambda: flowkit.iaf(3, 2, [8], bijection="gated", permutation="random", seed=0),
    "conditional_maf": lambda: flowkit.maf(3, 2, [8], context_dim=2, seed=0),
    "conditional_iaf": lambda: flowkit.iaf(3, 2, [8], context_dim=2, seed=0),
    "spline_maf": lambda: flowkit.nsf(3, 2, [8], bins=4, bound=3.0, seed=0),
    "spline_iaf": lambda: flowkit.iaf(3, 2, [8], bijection="spline", seed=0),
    "conditional_spline_maf": lambda: flowkit.nsf(3, 2, [8], context_dim=2, bound=[2.0, 3.0, 4.0], seed=0),
    "conditional_spline_iaf": lambda: flowkit.iaf(3, 2, [8], context_dim=2, bijection="spline", seed=0),
}
DIRECT, RESIDUAL = MADEConfig(skip_connections=True), MADEConfig(residual=True)
DENSITIES = {
    "bernoulli": lambda: flowkit.BernoulliMADE(4, [8], conditioner=MADEConfig(num_masks=2, order="random"), seed=0),
    "gaussian": lambda: flowkit.GaussianMADE(3, [8], context_dim=2, conditioner=DIRECT, seed=0),
    "mixture": lambda: flowkit.MixtureMADE(3, [8], num_components=2, seed=0),
    "categorical": lambda: flowkit.CategoricalMADE(4, [8], num_classes=3, conditioner=RESIDUAL, seed=0),
}


def compiled(fn):
    return torch.compile(fn, backend="aot_eager", fullgraph=True)


def model_and_data(name: str):
    torch.manual_seed(0)
    model = {**FLOWS, **DENSITIES}[name]()
    g = torch.Generator().manual_seed(1)
    dim, context_dim = model.input_dim, model.context_dim
    x = torch.randn(16, dim, generator=g)
    if name == "bernoulli":
        x = (x > 0).float()
    elif name == "categorical":
        x = (x > 0).long() + (x > 1).long()
    context = torch.randn(16, context_dim, generator=g) if context_dim else None
    return model, x, context


@pytest.fixture(autouse=True)
def _fresh_compile_caches():
    torch._dynamo.reset()


@pytest.mark.parametrize("name", [*FLOWS, *DENSITIES])
def test_training_step_compiles_to_one_graph(name):
    """The loss (log_prob inside it), in training mode, and its gradients."""
    model, x, context = model_and_data(name)
    model.train()

    def loss(x, context):
        return -model.log_prob(x, context).mean()

    compiled_loss = compiled(loss)(x, context)
    compiled_loss.backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager_loss = loss(x, context)
    eager_loss.backward()
    torch.testing.assert_close(compiled_loss, eager_loss, **TOL)
    for (parameter, p), grad in zip(model.named_parameters(), compiled_grads):
        torch.testing.assert_close(grad, p.grad, **TOL, msg=f"gradient of {parameter}")


@pytest.mark.parametrize("name", [*FLOWS, *DENSITIES])
def test_log_prob_and_sampling_compile_to_one_graph_each(name):
    model, x, context = model_and_data(name)
    model.eval()
    batch = () if context is not None else (16,)
    torch.testing.assert_close(compiled(model.log_prob)(x, context), model.log_prob(x, context), **TOL)

    def draw(fn):
        torch.manual_seed(3)
        return fn(batch, context)

    torch.testing.assert_close(draw(compiled(model.sample)), draw(model.sample), **TOL)
    if "iaf" in name:
        for got, expected in zip(draw(compiled(model.rsample_and_log_prob)), draw(model.rsample_and_log_prob)):
            torch.testing.assert_close(got, expected, **TOL)


def test_fit_compile_trains_like_eager(monkeypatch):
    data = flowkit.datasets.toy_2d("moons", 256)

    def run(compile: bool):
        torch.manual_seed(0)
        flow = flowkit.maf(2, num_transforms=2, hidden_dims=[8], seed=0)
        history = flowkit.fit(flow, data, epochs=2, batch_size=64, progress=False, seed=0, compile=compile)
        return flow, history

    original = torch.compile
    calls = []

    def aot_eager_compile(model, **kwargs):
        calls.append(model)
        return original(model, backend="aot_eager", fullgraph=True)

    monkeypatch.setattr(torch, "compile", aot_eager_compile)  # fit's own call, with the test's backend
    compiled_flow, compiled_history = run(compile=True)
    monkeypatch.undo()
    eager_flow, eager_history = run(compile=False)
    assert len(calls) == 1
    assert compiled_history.train_nll == pytest.approx(eager_history.train_nll, rel=1e-5)
    for p, q in zip(compiled_flow.parameters(), eager_flow.parameters()):
        torch.testing.assert_close(p, q, **TOL)

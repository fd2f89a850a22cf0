"""Bad inputs to the affine autoregressive transforms are named in clear errors at every
entry point; and Permute."""

import pytest
import torch

from flowkit.nn import MADE
from flowkit.transforms import (
    AffineIAF,
    AffineMAF,
    ConditionalAffineIAF,
    ConditionalAffineMAF,
    Permute,
    affine_iaf,
    affine_maf,
    conditional_affine_iaf,
    conditional_affine_maf,
    permute,
)
from helpers import entry_points

# ------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("cls", [AffineMAF, AffineIAF, ConditionalAffineMAF, ConditionalAffineIAF])
def test_made_with_wrong_param_dims_raises(cls):
    for param_dims in ([1], [2, 1], [1, 1, 1]):
        made = MADE(3, [8], param_dims, context_dim=2, seed=0)
        with pytest.raises(ValueError, match="made"):
            cls(made)


@pytest.mark.parametrize("cls", [AffineMAF, AffineIAF, ConditionalAffineMAF, ConditionalAffineIAF])
def test_non_made_raises_type_error(cls):
    with pytest.raises(TypeError, match="made"):
        cls(torch.nn.Linear(3, 6))


@pytest.mark.parametrize("cls", [ConditionalAffineMAF, ConditionalAffineIAF])
def test_conditional_transform_needs_context_made(cls):
    with pytest.raises(ValueError, match="made"):
        cls(MADE(3, [8], [1, 1], seed=0))


@pytest.mark.parametrize("scale_floor", [0.0, -0.1, 1.0, 2.0])
def test_bad_scale_floor_raises(scale_floor):
    with pytest.raises(ValueError, match="scale_floor"):
        affine_maf(3, [8], scale_floor=scale_floor)


def transforms_of_every_kind(dtype):
    made_kwargs = dict(hidden_dims=[8], seed=0)
    plain = [affine_maf(3, **made_kwargs), affine_iaf(3, **made_kwargs)]
    context = torch.zeros(2, dtype=dtype)
    conditional = [
        build(3, 2, **made_kwargs).to(dtype).condition(context)
        for build in (conditional_affine_maf, conditional_affine_iaf)
    ]
    return [t.to(dtype) for t in plain] + conditional


@pytest.mark.parametrize(
    "model_dtype, input_dtype",
    [(torch.float32, torch.float64), (torch.float64, torch.float32), (torch.float64, torch.float16)],
)
def test_every_direction_rejects_another_dtype_with_one_message(model_dtype, input_dtype):
    """MAF and IAF, plain and conditioned, in both directions: the same TypeError, raised
    before any arithmetic (no promotion, no error from inside torch)."""
    for t in transforms_of_every_kind(model_dtype):
        good = torch.zeros(4, 3, dtype=model_dtype)
        for name, call in entry_points(t, torch.zeros(4, 3, dtype=input_dtype), good):
            message = f"{name}: dtype {input_dtype} does not match the model's {model_dtype}; convert one of them"
            with pytest.raises(TypeError) as error:
                call()
            assert str(error.value) == message, type(t).__name__


@pytest.mark.parametrize("build", [conditional_affine_maf, conditional_affine_iaf])
def test_condition_checks_the_context(build):
    conditional = build(3, 2, hidden_dims=[8], seed=0)
    with pytest.raises(TypeError, match="context: dtype torch.float64 does not match the model's torch.float32"):
        conditional.condition(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"context: expected shape \(\.\.\., 2\) with context_dim=2"):
        conditional.condition(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="context: the MADE was built with context_dim=0"):
        AffineIAF(MADE(3, [8], [1, 1], seed=0), context=torch.zeros(2))


# --------------------------------------------------------------------------- Permute
@pytest.mark.parametrize("bad", [[0, 0, 1], [0, 2], [1, 2, 3], [[0, 1, 2]]])
def test_permute_rejects_non_permutations(bad):
    with pytest.raises(ValueError):
        Permute(bad)


def test_permute_builder_kinds_and_seeds():
    torch.testing.assert_close(permute(5, "reversed").permutation, torch.tensor([4, 3, 2, 1, 0]))
    a, b, c = permute(8, "random", seed=1), permute(8, "random", seed=1), permute(8, "random", seed=2)
    torch.testing.assert_close(a.permutation, b.permutation)
    assert not torch.equal(a.permutation, c.permutation)
    assert sorted(a.permutation.tolist()) == list(range(8))
    generator = torch.Generator().manual_seed(1)
    torch.testing.assert_close(permute(8, "random", seed=generator).permutation, a.permutation)


def test_default_hidden_dims_are_wide_enough_for_every_dependency():
    from flowkit.transforms import default_hidden_dims

    assert default_hidden_dims(2) == [64, 64]
    assert default_hidden_dims(30) == [91, 91]  # 3 D + 1 once that exceeds 64
    assert all(width >= d - 1 for d in (1, 5, 64, 200) for width in default_hidden_dims(d))


def test_init_near_identity_shrinks_the_last_layers_and_zeros_the_bias():
    from flowkit.transforms import init_near_identity

    made = MADE(3, [8], param_dims=[1, 1], context_dim=2, skip_connections=True, seed=0)
    before = {name: p.detach().clone() for name, p in made.named_parameters()}
    assert init_near_identity(made, scale=0.5) is made
    for name in ("output_layer.weight", "skip_layer.weight", "context_skip_layer.weight"):
        torch.testing.assert_close(getattr(made, name.split(".")[0]).weight, 0.5 * before[name])
    assert torch.all(made.output_layer.bias == 0)
    torch.testing.assert_close(made.input_layer.weight, before["input_layer.weight"])  # the rest is untouched

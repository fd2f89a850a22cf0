"""Helpers shared by the MADE test files (test_made_*.py): building a MADE while recording its
LostDependencyWarnings, reading the order and the allowed pairs, autograd dependence, the reach of
the layer masks, and a Hypothesis strategy of random MADE configurations."""

import copy
import warnings

import torch
from hypothesis import strategies as st

from flowkit import MADE, LostDependencyWarning

PARAM_DIMS = [[1], [2], [1, 1], [1, 3, 2]]
ORDER_KINDS = ["natural", "reversed", "random", "permutation"]


def build(**kwargs):
    """Builds a MADE and returns it with the LostDependencyWarnings it emitted.

    pyproject turns LostDependencyWarning into an error; recording them here lets a
    test assert exactly when they are emitted.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = MADE(**kwargs)
    return made, [w for w in caught if issubclass(w.category, LostDependencyWarning)]


def width_keeping_everything(input_dim, context_dim):
    """The narrowest hidden layer that can hold every useful degree: 1..D-1, plus
    degree 0 (units that see only the context) when there is a context, because the
    first output in the order can reach the context only through degree-0 units."""
    return max(input_dim - 1 + (1 if context_dim else 0), 1)


def ranks(made):
    """rank[j] = position of input j in the active order."""
    perm = made.permutation
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(len(perm))
    return rank


def allowed_pairs(made):
    """[output, input] is True when the input comes strictly before the output."""
    rank = ranks(made)
    return rank[:, None] > rank[None, :]


def as_param_rows(out, input_dim):
    """Pyro's layouts ((..., D), (..., p, D) or a tuple of them) as one (P, D) tensor."""
    parts = out if isinstance(out, tuple) else (out,)
    return torch.cat([part.reshape(-1, input_dim) for part in parts])


def jacobian_dependence(made, points, context=None):
    """Autograd Jacobians at each point, in float64.

    Returns (depends_on_x, depends_on_context): depends_on_x[i, j] is True when some
    output parameter of input i moves with input j at some point; depends_on_context[i]
    when some output parameter of input i moves with the context.
    """
    net = copy.deepcopy(made).double()
    D = made.input_dim
    dep_x = torch.zeros(D, D, dtype=torch.bool)
    dep_c = torch.zeros(D, dtype=torch.bool)
    for x in points.double():
        if context is None:
            jac_x = torch.autograd.functional.jacobian(lambda x: as_param_rows(net(x), D), x, vectorize=True)
        else:
            jac_x, jac_c = torch.autograd.functional.jacobian(
                lambda x, c: as_param_rows(net(x, c), D), (x, context.double()), vectorize=True
            )
            dep_c |= (jac_c != 0).any(dim=-1).any(dim=0)
        dep_x |= (jac_x != 0).any(dim=0)  # jac_x: (P, D_out, D_in)
    return dep_x, dep_c


def reach_from_layer_masks(made):
    """Which inputs reach which outputs, read from the masks the layers actually hold
    (independent of made.connectivity(), which derives them from the degrees)."""
    reach = made.input_layer.mask.long()
    for layer in made.hidden_layers:
        step = layer.mask.long()
        if made.residual:
            step = step + torch.eye(len(step), dtype=torch.long)
        reach = (step @ reach).clamp(max=1)
    reach = (made.output_layer.mask.long() @ reach).bool()
    if made.skip_layer is not None:
        reach |= made.skip_layer.mask
    return reach.reshape(-1, made.input_dim, made.input_dim).any(dim=0)


def pairs(matrix):
    """The (input, output) pairs where an [output, input] matrix is True."""
    return {(j, i) for i, j in torch.nonzero(matrix).tolist()}


@st.composite
def made_configs(draw, width="any", activations=("tanh", "elu", "relu"), skip=None):
    """Random MADE keyword arguments.

    width: "any", "wide" (every layer can hold every useful degree) or "narrow"
    (every layer is too narrow to).
    """
    input_dim = draw(st.integers(3 if width == "narrow" else 1, 30))
    context_dim = draw(st.sampled_from([0, 0, 1, 3]))
    needed = width_keeping_everything(input_dim, context_dim)
    if width == "wide":
        widths = st.integers(needed, needed + 10)
    elif width == "narrow":
        widths = st.integers(1, needed - 1)
    else:
        widths = st.integers(1, 2 * input_dim + 2)
    num_layers = draw(st.integers(1, 3))
    residual = draw(st.booleans())
    hidden = [draw(widths)] * num_layers if residual else [draw(widths) for _ in range(num_layers)]
    order = draw(st.sampled_from(ORDER_KINDS))
    if order == "permutation":
        order = draw(st.permutations(range(input_dim)))
    return dict(
        input_dim=input_dim,
        hidden_dims=hidden,
        param_dims=draw(st.sampled_from(PARAM_DIMS)),
        context_dim=context_dim,
        order=order,
        degrees=draw(st.sampled_from(["even", "random"])),
        activation=draw(st.sampled_from(activations)),
        skip_connections=draw(st.booleans()) if skip is None else skip,
        residual=residual,
        num_masks=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def random_points(config, num_points=2):
    generator = torch.Generator().manual_seed(config["seed"])
    points = torch.randn(num_points, config["input_dim"], generator=generator, dtype=torch.float64)
    context = None
    if config["context_dim"]:
        context = torch.randn(config["context_dim"], generator=generator, dtype=torch.float64)
    return points, context


def made_outputs_equal(a, b):
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))
    return not isinstance(b, tuple) and torch.equal(a, b)

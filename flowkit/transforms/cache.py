r"""The base of flowkit's transforms: both directions with their log-determinant in one
pass, and a one-pair cache that cannot go stale.

Every flowkit transform computes ``y`` and \(\log |\det \partial y / \partial x|\) together,
in either direction ([`forward_and_log_det`][flowkit.transforms.cache.CachedTransformModule.forward_and_log_det],
[`inverse_and_log_det`][flowkit.transforms.cache.CachedTransformModule.inverse_and_log_det]).
[`Flow`][flowkit.distributions.flows.Flow] calls those directly: no cache, no Pyro
bookkeeping, nothing that ``torch.compile`` cannot trace.

Through Pyro's interface (``t(x)``, ``t.inv(y)``, ``t.log_abs_det_jacobian(x, y)``, as
``TransformedDistribution`` calls them), the transform remembers the last ``(x, y)`` pair
and its log-determinant, so ``log_abs_det_jacobian`` of a pair just computed costs
nothing: that is what makes the density of an IAF's own samples free. The pair is
forgotten when the module changes: an optimiser step (parameters updated in place), new
running statistics or masks (buffers), or a switch between training and eval mode.
Otherwise a tensor scored twice across an SVI step would get the old value, or a graph
that was already freed.
"""

from __future__ import annotations

import contextlib
from itertools import chain

from pyro.distributions.torch_transform import TransformModule
from torch import Tensor

__all__ = ["CachedTransformModule"]


class CachedTransformModule(TransformModule):
    """A ``TransformModule`` that computes each direction with its log-determinant, and
    caches the last pair (plus its log-determinant) until a parameter or buffer changes
    in place or the train/eval mode changes.

    Subclasses implement
    [`forward_and_log_det`][flowkit.transforms.cache.CachedTransformModule.forward_and_log_det],
    [`inverse_and_log_det`][flowkit.transforms.cache.CachedTransformModule.inverse_and_log_det]
    and ``_log_abs_det_jacobian(x, y)`` (the log-determinant of a pair that is not cached).
    """

    # Pyro's TransformModule hashes through super(), which torch.compile cannot trace.
    __hash__ = object.__hash__

    def __init__(self):
        super().__init__(cache_size=1)
        self._cached_log_det: tuple[Tensor, ...] = ()  # a tuple, so a Parameter is never registered
        self._cache_key: tuple | None = None

    def forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(y, log|det dy/dx|)`` for noise-side ``x``; the log-determinant has shape
        ``x.shape[:-1]``. Uses no cache."""
        raise NotImplementedError

    def inverse_and_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(x, log|det dy/dx|)`` for data-side ``y``: the inverse, with the
        log-determinant of the forward map at that pair. Uses no cache."""
        raise NotImplementedError

    def _log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------ Pyro's interface
    def _state_key(self) -> tuple:
        return self.training, tuple(t._version for t in chain(self.parameters(), self.buffers()))

    def _cache_holds(self, x: Tensor | None, y: Tensor | None) -> bool:
        """Whether the cached pair is ``(x, y)`` (``None`` matches either side) and was
        computed by the module as it is now."""
        x_old, y_old = self._cached_x_y
        if x_old is None or (x is not None and x is not x_old) or (y is not None and y is not y_old):
            return False
        return self._state_key() == self._cache_key

    def _remember(self, x: Tensor, y: Tensor, log_det: Tensor) -> None:
        self._cached_x_y = x, y
        self._cached_log_det = (log_det,)
        self._cache_key = self._state_key()  # after the pass: an inverse may update running statistics

    def __call__(self, x: Tensor) -> Tensor:
        if self._cache_holds(x, None):
            return self._cached_x_y[1]
        y, log_det = self.forward_and_log_det(x)
        self._remember(x, y, log_det)
        return y

    def _inv_call(self, y: Tensor) -> Tensor:
        if self._cache_holds(None, y):
            return self._cached_x_y[0]
        # A module converted by pyro.nn.module.to_pyro_module_ registers its parameters
        # only inside its Pyro context, which Pyro enters in __call__ but not here.
        with getattr(self, "_pyro_context", contextlib.nullcontext()):
            x, log_det = self.inverse_and_log_det(y)
        self._remember(x, y, log_det)
        return x

    def _call(self, x: Tensor) -> Tensor:
        return self.forward_and_log_det(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.inverse_and_log_det(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        r"""\(\log |\det \partial y / \partial x|\): from the cache (no pass at all) when
        ``(x, y)`` is the pair last computed, else computed."""
        if self._cache_holds(x, y):
            return self._cached_log_det[0]
        return self._log_abs_det_jacobian(x, y)

    def __getstate__(self) -> dict:
        # Cached tensors belong to an autograd graph: never pickle or deepcopy them.
        state = super().__getstate__()
        state["_cached_x_y"] = None, None
        state["_cached_log_det"] = ()
        state["_cache_key"] = None
        return state

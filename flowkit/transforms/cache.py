"""A one-pair cache that cannot go stale.

Pyro's ``TransformModule(cache_size=1)`` remembers the last ``(x, y)`` pair and answers
from it when called again on the very same tensor. flowkit's transforms also remember
the log-scale of that pass, so ``log_abs_det_jacobian`` of a pair just computed costs
nothing. Both must be forgotten when the module changes: an optimiser step (parameters
updated in place), new running statistics or masks (buffers), or a switch between
training and eval mode. Otherwise a tensor scored twice across an SVI step would get the
old value, or a graph that was already freed.
"""

from __future__ import annotations

import contextlib
from itertools import chain

from pyro.distributions.torch_transform import TransformModule
from torch import Tensor

__all__ = ["CachedTransformModule"]


class CachedTransformModule(TransformModule):
    """A ``TransformModule`` with a one-pair cache (plus its log-scale) that is dropped
    whenever a parameter or buffer changes in place or the train/eval mode changes."""

    # Pyro's TransformModule hashes through super(), which torch.compile cannot trace.
    __hash__ = object.__hash__

    def __init__(self):
        super().__init__(cache_size=1)
        self._cached_log_scale: tuple[Tensor, ...] = ()  # a tuple, so a Parameter is never registered
        self._cache_key: tuple | None = None

    def _state_key(self) -> tuple:
        return self.training, tuple(t._version for t in chain(self.parameters(), self.buffers()))

    def _drop_stale_cache(self) -> None:
        if self._state_key() != self._cache_key:
            self._cached_x_y = None, None
            self._cached_log_scale = ()

    def _remember_log_scale(self, log_scale: Tensor) -> None:
        self._cached_log_scale = (log_scale,)

    def cached_log_scale(self, x: Tensor, y: Tensor) -> Tensor | None:
        """The log-scale of the pass that produced ``(x, y)``, if that pair is the cached one."""
        self._drop_stale_cache()
        x_old, y_old = self._cached_x_y
        if self._cached_log_scale and x is x_old and y is y_old:
            return self._cached_log_scale[0]
        return None

    def __call__(self, x: Tensor) -> Tensor:
        self._drop_stale_cache()
        y = super().__call__(x)
        self._cache_key = self._state_key()  # after the call: an inverse may update running statistics
        return y

    def _inv_call(self, y: Tensor) -> Tensor:
        self._drop_stale_cache()
        # A module converted by pyro.nn.module.to_pyro_module_ registers its parameters
        # only inside its Pyro context, which Pyro enters in __call__ but not here.
        with getattr(self, "_pyro_context", contextlib.nullcontext()):
            x = super()._inv_call(y)
        self._cache_key = self._state_key()
        return x

    def __getstate__(self) -> dict:
        # Cached tensors belong to an autograd graph: never pickle or deepcopy them.
        state = super().__getstate__()
        state["_cached_x_y"] = None, None
        state["_cached_log_scale"] = ()
        state["_cache_key"] = None
        return state

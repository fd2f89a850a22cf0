r"""Normalisation layers between flow steps: batch normalisation and ActNorm.

Both are affine per dimension. In Pyro's convention the forward direction maps noise
to data, so the *inverse* is the normalising direction applied to data:
\(x = (y - \text{shift}) / \text{scale}\).
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from torch import Tensor, nn

from flowkit._validation import check_int
from flowkit.transforms.cache import CachedTransformModule
from flowkit.transforms.elementwise import affine_map

__all__ = ["ActNorm", "BatchNorm"]


class _ElementwiseAffine(CachedTransformModule):
    """``y = shift + exp(log_scale) * x`` per dimension; subclasses say where the shift
    and log-scale come from (``_shift_log_scale``)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(self, input_dim: int):
        super().__init__()
        check_int(input_dim, "input_dim")
        self.input_dim = input_dim

    def _shift_log_scale(self, y: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``y = shift + exp(log_scale) * x`` and its log-determinant."""
        shift, log_scale = self._shift_log_scale(None)
        y, _ = affine_map(x, shift, log_scale.exp(), log_scale, inverse=False)
        return y, log_scale.sum(-1).expand(x.shape[:-1])

    def _inverse_and_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``x = (y - shift) / exp(log_scale)`` (the normalising direction) and the
        log-determinant of the forward map."""
        shift, log_scale = self._shift_log_scale(y)
        x, _ = affine_map(y, shift, log_scale.exp(), log_scale, inverse=True)
        return x, log_scale.sum(-1).expand(y.shape[:-1])

    def _log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """The log-scale the inverse would use for ``y``."""
        return self._shift_log_scale(y)[1].sum(-1).expand(y.shape[:-1])


class BatchNorm(_ElementwiseAffine):
    r"""Batch normalisation as a bijection, in the form of the MAF paper
    (Papamakarios et al. 2017):

    \[
    x = \frac{y - \mu}{\sqrt{v + \epsilon}} e^{\gamma} + \beta.
    \]

    In training mode \(\mu, v\) are the statistics of the batch being normalised
    (over every batch dimension) and the running averages are updated; in eval mode the
    running averages are used. Sampling (the forward direction) always uses the running
    averages, so the forward and inverse are exact inverses in eval mode.

    Args:
        input_dim: The number of dimensions.
        momentum: The weight of each new batch in the running averages.
        eps: Added to the variance before its square root.

    Examples:
        >>> bn = BatchNorm(2).eval()
        >>> y = torch.randn(4, 2)
        >>> x = bn.inv(y).clone()  # a new tensor, so the cached pair cannot answer
        >>> torch.allclose(bn(x), y)
        True
    """

    def __init__(self, input_dim: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(input_dim)
        self.momentum = momentum
        self.eps = eps
        self.log_gamma = nn.Parameter(torch.zeros(input_dim))
        self.beta = nn.Parameter(torch.zeros(input_dim))
        self.register_buffer("running_mean", torch.zeros(input_dim))
        self.register_buffer("running_var", torch.ones(input_dim))

    def _dtype(self) -> torch.dtype:
        return self.log_gamma.dtype

    def _statistics(self, y: Tensor | None) -> tuple[Tensor, Tensor]:
        if y is None or not self.training:
            return self.running_mean, self.running_var
        flat = y.reshape(-1, self.input_dim)
        if flat.shape[0] < 2:
            raise ValueError(f"y: batch normalisation in training mode needs at least 2 rows, got {flat.shape[0]}")
        return flat.mean(0), flat.var(0)

    def _shift_log_scale(self, y: Tensor | None) -> tuple[Tensor, Tensor]:
        # Written as y = shift + scale * x, the inverse of the normalisation above.
        mean, var = self._statistics(y)
        log_scale = 0.5 * (var + self.eps).log() - self.log_gamma
        return mean - self.beta * log_scale.exp(), log_scale

    def _inverse_and_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Normalises ``y`` with its batch statistics in training mode (and updates the
        running averages), with the running averages in eval mode."""
        x, log_det = super()._inverse_and_log_det(y)
        if self.training:
            with torch.no_grad():
                mean, var = self._statistics(y)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
        return x, log_det


class ActNorm(_ElementwiseAffine):
    r"""Activation normalisation (Kingma & Dhariwal 2018): a learned per-dimension affine
    map, \(y = b + e^{s} x\), initialised from data.

    The first time it normalises data in training mode (the inverse direction, as in
    ``log_prob``), it sets \(b, s\) to the batch mean and log standard deviation, so
    that batch comes out with zero mean and unit variance. Before that it is the identity.

    Args:
        input_dim: The number of dimensions.

    Examples:
        >>> act = ActNorm(2)
        >>> x = act.inv(3.0 + 2.0 * torch.randn(1000, 2))
        >>> bool(x.mean(0).abs().max() < 1e-5)
        True
    """

    def __init__(self, input_dim: int):
        super().__init__(input_dim)
        self.shift = nn.Parameter(torch.zeros(input_dim))
        self.log_scale = nn.Parameter(torch.zeros(input_dim))
        self.register_buffer("initialized", torch.tensor(False))
        # A Python copy of the flag, so the training-mode check never reads the buffer back
        # from the device (nor splits a torch.compile graph); load_state_dict refreshes it.
        self._initialized = False
        self.register_load_state_dict_post_hook(_sync_after_load)

    @property
    def is_initialized(self) -> bool:
        """Whether it has initialised from data (the ``initialized`` buffer, as a Python bool)."""
        return self._initialized

    def sync_from_buffers(self) -> None:
        """Refreshes the Python copy of the flag after the buffer was overwritten (by
        ``load_state_dict``, or by ``DistributedDataParallel`` copying rank 0's)."""
        self._initialized = bool(self.initialized)

    def _dtype(self) -> torch.dtype:
        return self.shift.dtype

    def _shift_log_scale(self, y: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.shift, self.log_scale

    def _inverse_and_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Normalises ``y``; the first call in training mode initialises from ``y``."""
        if self.training and not self._initialized:
            flat = y.detach().reshape(-1, self.input_dim)
            if flat.shape[0] < 2:
                raise ValueError(
                    f"y: ActNorm's data-dependent initialisation needs at least 2 rows, got {flat.shape[0]}"
                )
            with torch.no_grad():
                self.shift.copy_(flat.mean(0))
                self.log_scale.copy_(flat.std(0).clamp(min=1e-6).log())
                self.initialized.fill_(True)
            self._initialized = True
        return super()._inverse_and_log_det(y)


def _sync_after_load(act_norm: ActNorm, incompatible_keys: object) -> None:
    """``load_state_dict``'s post hook (a module-level function, so that ActNorm pickles)."""
    act_norm.sync_from_buffers()

"""Where a warning should point: the user's line, not flowkit's.

A fixed ``stacklevel`` is right for one way into a function only: a MADE built directly,
by ``flowkit.maf`` or by a density model sits at a different depth below the user's
call. Walking the stack to the first frame outside the package is right for all of them.
"""

from __future__ import annotations

import os
import sys

__all__ = ["user_stacklevel"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn``, called from the function that warns, that
    points at the first caller outside the flowkit package."""
    frame = sys._getframe(1)  # the function that warns: stacklevel 1
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level

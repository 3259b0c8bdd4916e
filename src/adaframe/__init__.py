"""AdaFrame: adaptive frame selection for fast video recognition (Wu et al., CVPR 2019).

``from adaframe import Recognizer`` is the Python API for recognising video files (see
``adaframe.recognize.recognizer``); it is imported on first use, so ``import adaframe`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Recognition", "Recognizer"]

if TYPE_CHECKING:
    from adaframe.recognize.recognizer import Recognizer
    from adaframe.recognize.result import Recognition


def __getattr__(name: str) -> object:
    if name in __all__:
        from adaframe.recognize import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'adaframe' has no attribute {name!r}")

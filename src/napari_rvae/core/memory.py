"""Telling a device's out-of-memory error from other errors, and freeing its cache after one.

Training and encoding halve their batch and go on when the GPU runs out of
memory (and say so), rather than ending a long run with a traceback.
"""

from __future__ import annotations

import torch

__all__ = ["free_cached_memory", "is_out_of_memory"]


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError`` and MPS's "out of memory" RuntimeError.

    Examples
    --------
    >>> is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    True
    >>> is_out_of_memory(ValueError("out of memory"))
    False
    """
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    if oom and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_cached_memory(device) -> None:
    """Give the allocator's cached blocks back after an out-of-memory error."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()

"""Importing torch's compiler stack so that it cannot crash a process that shows OpenGL.

The first ``torch.optim`` optimizer imports ``torch._dynamo``, which imports
triton when it is installed (torch's CUDA build brings it). triton's native
library carries its own LLVM and exports its symbols. A process that already
holds another LLVM with global symbols, as every napari window on a Mesa
OpenGL driver does (llvmpipe under Xvfb or in a VM, radeonsi, ...; Mesa loads
libLLVM with the driver), makes the dynamic linker bind triton's static
initialisers to that other LLVM, and the import dies with a segmentation fault
(in llvm::DebugCounter, measured with gdb). The thread does not matter: it
crashes on napari's main thread too; only the load order does (triton loaded
before the OpenGL driver is fine). Loading triton with ``RTLD_DEEPBIND`` makes
its library resolve its own symbols first, whatever the process holds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading

__all__ = ["import_dynamo_safely"]

_lock = threading.Lock()


def import_dynamo_safely() -> None:
    """Import ``torch._dynamo`` (and triton, if installed) with triton bound to its own LLVM.

    A no-op once ``torch._dynamo`` is imported. ``RTLD_DEEPBIND`` exists with
    glibc only; elsewhere (macOS's two-level namespaces, Windows) symbols do
    not interpose like this and the plain import is used.

    Examples
    --------
    >>> import_dynamo_safely()
    >>> "torch._dynamo" in sys.modules
    True
    """
    if "torch._dynamo" in sys.modules:
        return
    with _lock:
        deep = getattr(os, "RTLD_DEEPBIND", 0)
        if deep and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
            flags = sys.getdlopenflags()
            sys.setdlopenflags(flags | deep)
            try:
                import triton  # noqa: F401
            except Exception:  # noqa: BLE001 - a broken triton: torch decides below whether it can do without
                pass
            finally:
                sys.setdlopenflags(flags)
        import torch._dynamo  # noqa: F401

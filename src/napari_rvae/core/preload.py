"""Heavy imports a training job needs, done once ahead of it.

scikit-learn's clustering (about 1.5 s to import here) and torch's compiler
stack (about 2 s; the first optimizer imports it) run C initialisers that hold
the GIL. Imported inside a training worker they froze napari's event loop for
0.2-0.3 s at a time (docs/speed.md, responsiveness); imported when the Train
widget opens, they are ready before the first run.
"""

from __future__ import annotations

from .dynamo_import import import_dynamo_safely


def preload_training_imports() -> None:
    """Import what the first training would import on its own (safe to call from any thread, twice)."""
    import sklearn.cluster  # noqa: F401 - the alignment's and the class graph's partitions (semi_supervised is light)

    import_dynamo_safely()

"""An output folder that appears complete or not at all.

Files are written into a hidden staging folder beside the target; ``commit``
moves them into place with ``report.json`` last, so a folder that holds a
report is a finished run. On an error the staging folder is removed and the
target is left as it was.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError

REPORT = "report.json"


class OutputDir:
    def __init__(self, target):
        self.target = Path(target)
        if self.target.exists() and not self.target.is_dir():
            raise InputError(f"--out {self.target} exists and is not a folder.")
        parent = self.target.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.stage = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-", dir=parent))
        except OSError as exc:
            raise InputError(f"Cannot write to {parent}: {exc.strerror}.") from None

    def path(self, name: str) -> Path:
        return self.stage / name

    def write_json(self, name: str, data: dict) -> None:
        self.path(name).write_text(strict_json(data))

    def commit(self) -> Path:
        self.target.mkdir(parents=True, exist_ok=True)
        # An old report would make a half-replaced folder look complete.
        (self.target / REPORT).unlink(missing_ok=True)
        names = sorted(p.name for p in self.stage.iterdir())
        for name in [n for n in names if n != REPORT] + ([REPORT] if REPORT in names else []):
            os.replace(self.stage / name, self.target / name)
        shutil.rmtree(self.stage, ignore_errors=True)
        return self.target

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


def strict_json(data) -> str:
    """Indented strict JSON: NaN and infinities (which ``json`` would write as invalid tokens) become null."""
    return json.dumps(_finite(data), indent=2, default=_jsonable, allow_nan=False)


def _finite(obj):
    """``obj`` with every non-finite float (Python or NumPy, at any depth) replaced by ``None``."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.ndarray):
            return _finite(obj.tolist())
        if isinstance(obj, np.generic):
            obj = obj.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _jsonable(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

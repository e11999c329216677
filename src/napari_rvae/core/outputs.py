"""An output folder that appears complete or not at all.

Files are written into a hidden staging folder beside the target; ``commit``
moves them into place with ``report.json`` last, so a folder that holds a
report is a finished run. On an error the staging folder is removed and the
target is left as it was.
"""

from __future__ import annotations

import json
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
        self.path(name).write_text(json.dumps(data, indent=2, default=_jsonable))

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

"""The ``napari-rvae`` command's entry point.

Loading the program (torch, pyro) takes seconds; a Ctrl-C in them ends it with
the same one line as a Ctrl-C later, not a traceback from inside an import.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130
ABORTED = "napari-rvae: aborted; nothing was written."


def main() -> int:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print(ABORTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    return run()

"""Where chunked jobs run: a dask.distributed client, local or on an existing cluster.

:func:`compute_client` is the one way the jobs get one. Without an address it
starts a ``LocalCluster`` sized to the machine: one single-threaded worker
*process* per core, because detection (NumPy/SciPy) and encoding (torch) hold
the GIL for long stretches and torch would otherwise start one thread per core
in every worker. With an address (``tcp://host:port``, e.g. a scheduler that
dask-jobqueue started on SLURM or PBS) it connects to that cluster; a scheduler
that does not answer is a user mistake (:class:`~.errors.InputError`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

from .errors import InputError

# Seconds to wait for an existing scheduler before saying it is unreachable: long enough for a
# busy scheduler on a LAN, short enough that a wrong address answers within a breath.
CONNECT_TIMEOUT_S = 10


def limit_threads() -> None:
    """One torch (and BLAS) thread in a dask worker, so that N workers use N cores, not N x N.

    Called at the start of every task, after the task's imports; a no-op outside a
    worker (the job's own process keeps torch's choice), and torch is left unloaded
    in a worker whose tasks do not use it (detecting, cutting: dask's nanny already
    sets the BLAS and OpenMP thread counts to one).
    """
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def cluster_summary(client, scheduler: str | None) -> dict:
    """report.json's ``cluster``: the scheduler (``"local"`` for a LocalCluster), workers, memory limit."""
    if client is None:
        return {"scheduler": None, "workers": 0, "memory_limit": None}
    info = client.scheduler_info()
    workers = info.get("workers", {})
    limits = {w.get("memory_limit") for w in workers.values()}
    limit = limits.pop() if len(limits) == 1 else None
    return {"scheduler": scheduler or "local", "workers": len(workers), "memory_limit": limit}


@contextlib.contextmanager
def compute_client(scheduler: str | None = None, *, workers: int | None = None, memory_limit: str | None = None):
    """A ``distributed.Client``: a new LocalCluster, or the cluster at ``scheduler``.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``). Default: a
        LocalCluster on this machine, closed on exit.
    workers : int, optional
        LocalCluster worker processes (one thread each); default
        ``os.cpu_count()``. Ignored with ``scheduler``.
    memory_limit : str, optional
        Per worker, in dask's syntax (``"2GB"``); default dask's (the
        machine's memory shared among the workers). Ignored with ``scheduler``.

    Yields
    ------
    distributed.Client

    Raises
    ------
    InputError
        If the scheduler cannot be reached or the memory limit is not readable.
    """
    from distributed import Client

    if scheduler is not None:
        client = _connect(Client, scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    with _interrupt_deferred():  # a cluster half started cannot be closed cleanly
        cluster = _local_cluster(workers, memory_limit)
    try:
        with Client(cluster) as client:
            yield client
    except BaseException:
        # Stopped (Ctrl-C) or failed: the scheduler's complaints about workers that go away
        # mid-task are expected now, not news for the user.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        raise
    finally:
        cluster.close()


@contextlib.contextmanager
def _interrupt_deferred():
    """Hold a Ctrl-C that comes inside the block until the block is done, then raise it.

    Only on the main thread (where Python delivers signals); elsewhere a no-op.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _connect(client_type, address: str):
    """A client of the scheduler at ``address``, or one InputError line."""
    try:
        return client_type(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"Could not reach the dask scheduler at {address} ({reason[:120]}); is it running?") from None


def _local_cluster(workers: int | None, memory_limit: str | None):
    """A quiet LocalCluster of single-threaded worker processes."""
    from dask.utils import parse_bytes
    from distributed import LocalCluster

    if memory_limit is not None:
        try:
            parse_bytes(memory_limit)
        except (ValueError, TypeError):
            raise InputError(f"--memory-limit {memory_limit!r} is not a size like 2GB, 500MiB or 1e9.") from None
    n = int(workers or os.cpu_count() or 1)
    kwargs = {} if memory_limit is None else {"memory_limit": memory_limit}
    with warnings.catch_warnings():
        # The scheduler's HTTP endpoint moves to a free port when another cluster holds 8787: not news.
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        return LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            **kwargs,
        )

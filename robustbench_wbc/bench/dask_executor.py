"""Running cells on a Dask cluster: a LocalCluster of worker processes here, or an existing scheduler.

The client (this process) trains what is missing, plans, and hands the cells out, largest first
(:meth:`Cell.cost` as Dask's ``priority``); each worker process keeps the models and splits it
loaded in a :class:`WorkerContext` across cells, and sends back only the small
:class:`~robustbench_wbc.bench.runner.CellResult` (tidy rows and per-sample outcomes). The client
commits each result to the store as it arrives (:func:`~robustbench_wbc.bench.runner.execute`),
so a killed client loses only the cells in flight, and a cell whose worker died, retried
elsewhere, is still stored once. A cell that raises on a worker, or whose workers keep dying,
becomes a ``failed`` row with the reason; the other cells go on.

Workers load models from the cache and never train: ``$WBC_ROBUST_HOME`` (and the training
profile, the ``--data`` datasets and the plugin files) are passed to them in a
:class:`WorkerSetup`. Workers of a remote scheduler must therefore see the same cache path with
the same trained models (a shared file system, or a copy), the same datasets and plugin paths,
and have this package installed; a worker whose checkpoint differs from the client's refuses the
cell. Start them with one thread each (``dask worker ADDRESS --nthreads 1``), and without Dask's
default ``MALLOC_TRIM_THRESHOLD_`` (``distributed.nanny.pre-spawn-environ``), which slows torch
2-3x; the LocalCluster of ``--workers`` does both. Dask itself is imported only here, only when
this executor is used.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from robustbench_wbc import paths
from robustbench_wbc.bench.cells import Cell
from robustbench_wbc.bench.runner import CellResult, Context, evaluate_cell, lost_cell
from robustbench_wbc.models.hub import CheckpointError, load_model

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10  # how long to try reaching a --scheduler before giving up
# A task that raised is tried once more. One whose worker died Dask reschedules on its own, up to
# distributed.scheduler.allowed-failures deaths (3), then gives up with KilledWorker: a failed row.
RETRIES = 1


class SchedulerError(RuntimeError):
    """The Dask scheduler cannot be reached, or the cluster cannot be started."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process needs to evaluate this run's cells as the client would.

    Args:
        run_id: the client's run id; every row carries it, and a worker keeps one run's context.
        device: where cells run on the worker (``cpu``, ``cuda``, ``cuda:1``).
        env: environment variables set on the worker before anything loads (the model cache
            ``WBC_ROBUST_HOME`` and the training profile ``WBC_ROBUST_PROFILE``).
        torch_threads: torch intra-op threads per worker; ``None`` leaves the worker's own.
        data: the ``--data NAME=PATH`` datasets to register.
        skip_bad: register them skipping unreadable files.
        model_plugins: ``--model-plugin`` files to import.
        attack_plugins: ``--plugin`` files to load.
    """

    run_id: str
    device: str = "cpu"
    env: dict[str, str] = field(default_factory=dict)
    torch_threads: int | None = None
    data: tuple[str, ...] = ()
    skip_bad: bool = False
    model_plugins: tuple[str, ...] = ()
    attack_plugins: tuple[str, ...] = ()

    def apply(self) -> None:
        """Sets the environment and registers the datasets and plugins in this (worker) process."""
        os.environ.update(self.env)
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        from robustbench_wbc.data.real import parse_data_option, register_dataset
        from robustbench_wbc.plugins import load_attack_plugin, load_model_plugin

        for option in self.data:
            register_dataset(*parse_data_option(option), skip_bad=self.skip_bad)
        for path in self.model_plugins:
            load_model_plugin(path)
        for path in self.attack_plugins:
            load_attack_plugin(path)


def client_env() -> dict[str, str]:
    """Gives the environment a worker needs from the client: the model cache and the training profile."""
    env = {"WBC_ROBUST_HOME": str(paths.home())}
    if os.environ.get(paths.PROFILE_ENV):
        env[paths.PROFILE_ENV] = os.environ[paths.PROFILE_ENV]
    return env


@dataclass
class WorkerContext(Context):
    """A worker's :class:`Context`: loads models from the cache only (training is the client's job)."""

    def model(self, model_id: str):
        if model_id not in self.models:
            model, card = load_model(model_id, train=False)
            self.models[model_id] = (model.to(self.device), card)
        return self.models[model_id]


# One context per (run, thread) in each worker process: models stay loaded across a run's cells;
# a new run (a long-lived remote worker) starts afresh, so a retrained model is never served stale.
_CONTEXTS: dict[tuple[str, int], WorkerContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def worker_context(setup: WorkerSetup) -> WorkerContext:
    """Gives this worker thread's context for the run, setting the worker up on the run's first cell."""
    key = (setup.run_id, threading.get_ident())
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            for old in [k for k in _CONTEXTS if k[0] != setup.run_id]:
                del _CONTEXTS[old]
            setup.apply()
            ctx = _CONTEXTS[key] = WorkerContext(run_id=setup.run_id, device=torch.device(setup.device))
    return ctx


def evaluate_on_worker(cell: Cell, setup: WorkerSetup) -> CellResult:
    """Evaluates one cell in a worker process (the Dask task); raises if the worker cannot load its model
    or has another checkpoint of it than the client's."""
    ctx = worker_context(setup)
    _, card = ctx.model(cell.model)
    if card.weights_sha256 != cell.model_sha256:
        raise CheckpointError(
            f"the worker's checkpoint of {cell.model!r} (weights {card.weights_sha256[:12]}) is not the client's "
            f"({cell.model_sha256[:12]}): workers need the same WBC_ROBUST_HOME, with the same trained models, "
            f"as the client (here {paths.home()})")
    return evaluate_cell(cell, ctx)


@contextlib.contextmanager
def _environ_kept() -> Iterator[None]:
    """Restores this process's environment afterwards: a nanny sets its workers' variables in its own
    process before it spawns them (OMP_NUM_THREADS, PYTHONHASHSEED), which would leak into the client."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update({k: v for k, v in saved.items() if os.environ.get(k) != v})


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return f"the Dask workers running it died ({name}: {exc})"
    if isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError)):
        return f"the Dask task was cancelled ({name}: {exc}); was the scheduler lost?"
    return f"{name}: {exc}"


class DaskExecutor:
    """Runs cells on Dask workers: a LocalCluster of ``workers`` processes on loopback, or the cluster of
    the ``scheduler`` at ``tcp://HOST:PORT``. Use it as a context manager (it starts and stops the cluster).

    Args:
        device: where cells run on the workers.
        workers: worker processes of a LocalCluster (one thread each; torch threads cores // workers).
        scheduler: the address of an existing scheduler to join instead.
        setup: the rest of what workers need (datasets, plugins; see :class:`WorkerSetup`); its
            ``run_id``, ``device``, ``env`` and ``torch_threads`` are filled in here.
    """

    def __init__(self, device: torch.device | str = "cpu", workers: int | None = None, scheduler: str | None = None,
                 setup: WorkerSetup | None = None) -> None:
        if (workers is None) == (scheduler is None):
            raise ValueError("give either workers (a LocalCluster) or scheduler (an existing cluster)")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers, self.scheduler = workers, scheduler
        base = setup or WorkerSetup(run_id="")
        threads = max(1, (os.cpu_count() or 1) // workers) if workers else base.torch_threads
        self.setup = WorkerSetup(uuid.uuid4().hex[:12], str(torch.device(device)), {**client_env(), **base.env}, threads,
                                 base.data, base.skip_bad, base.model_plugins, base.attack_plugins)
        self.ctx = Context(run_id=self.setup.run_id, device=torch.device(device))  # for rows of lost cells
        self.client = self.cluster = None

    def __enter__(self) -> DaskExecutor:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Starts the LocalCluster or connects to the scheduler; raises :class:`SchedulerError` if it cannot."""
        if self.client is not None:
            return
        from distributed import Client, LocalCluster

        # Dask logs at INFO (every worker's start and stop); follow this process's verbosity instead
        level = logging.getLevelName(max(logging.getLogger().getEffectiveLevel(), logging.INFO))
        logging.getLogger("distributed").setLevel(level)

        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise SchedulerError(
                    f"cannot reach the Dask scheduler at {self.scheduler} within {CONNECT_TIMEOUT_S} s ({exc}). "
                    f"Start one there (`dask scheduler`, then `dask worker {self.scheduler} --nthreads 1` on each "
                    f"machine), check the address, or use --workers N for a cluster on this machine.") from None
            return
        import dask

        # Dask starts workers with MALLOC_TRIM_THRESHOLD_ set, which turns off glibc's adaptive mmap threshold:
        # every large tensor is then mapped and unmapped afresh, and a model runs 2-3x slower than here
        threads = str(self.setup.torch_threads or 1)
        pre_spawn = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        try:
            # processes with one thread each: torch and the attack libraries are not safe to share a model across
            # threads; the nanny passes the environment (the model cache) to each worker process it starts, which
            # imports this module (torch, the attack libraries) as it starts rather than on its first cell
            config = {"distributed.nanny.pre-spawn-environ": pre_spawn}
            with dask.config.set(config), _environ_kept():
                self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address=None, preload=[__name__],
                                            env={**self.setup.env, "DASK_LOGGING__DISTRIBUTED": level.lower()})
            self.client = Client(self.cluster, set_as_default=False)
        except Exception as exc:
            self.close()
            raise SchedulerError(f"cannot start a Dask LocalCluster of {self.workers} workers: {exc}") from exc

    def close(self) -> None:
        """Disconnects, and stops the LocalCluster if this executor started it."""
        nanny = logging.getLogger("distributed.nanny")
        level = nanny.level
        # a worker process slow to exit (torch's teardown on a busy machine) is killed after 4 s, with a
        # warning; its results are all in by then, so the warning says nothing worth reading
        nanny.setLevel(logging.ERROR)
        try:
            for thing in (self.client, self.cluster):
                if thing is not None:
                    try:
                        thing.close()
                    except Exception as exc:  # closing must not hide what happened before it
                        logger.warning("closing Dask %s: %s", type(thing).__name__, exc)
        finally:
            nanny.setLevel(level)
        self.client = self.cluster = None

    def map(self, cells: Sequence[Cell]) -> Iterable[CellResult]:
        """Hands the cells out largest first and gives each result as it arrives; a cell that raised or whose
        workers died gives a ``failed`` result with the reason.

        Only as many cells are with the scheduler as the workers have threads, and the next largest goes
        out as each result comes in: the scheduler places a task it is given at once on the least busy
        worker, so with more in flight a worker slow to start would hold large cells while another ran
        the small ones (Dask queues tasks in priority order only for a large group, and only where the
        scheduler's ``worker-saturation`` allows: not one of ours, with ``--scheduler``)."""
        from distributed import as_completed

        self.start()
        by_key: dict[str, Cell] = {}
        waiting = collections.deque(sorted(cells, key=lambda c: -c.cost()))  # a stable sort keeps a model's cells together
        pending = as_completed(loop=self.client.loop)
        slots = _Slots(self.client)

        def top_up() -> None:
            while waiting and pending.count() < slots.total():
                cell = waiting.popleft()
                key = f"cell-{cell.id}-{self.setup.run_id}-{len(cells) - len(waiting)}"
                by_key[key] = cell
                pending.add(self.client.submit(evaluate_on_worker, cell, self.setup, key=key, priority=cell.cost(),
                                               retries=RETRIES, pure=False))

        top_up()
        # hold no future here once it is done: its result is then freed on the worker as soon as it is read
        for future in pending:
            cell = by_key.pop(future.key)
            try:
                result = future.result()
            except (Exception, asyncio.CancelledError, concurrent.futures.CancelledError) as exc:
                result = lost_cell(cell, _reason(exc), self.ctx)  # logs it
            future.release()
            top_up()  # before the result is stored: the freed worker need not wait for the store
            yield result


class _Slots:
    """The worker threads of the cluster, asked of the scheduler at most once a second (workers come and go)."""

    def __init__(self, client) -> None:
        self.client, self.asked, self.threads = client, float("-inf"), 1

    def total(self) -> int:
        now = time.monotonic()
        if now - self.asked >= 1.0:
            self.asked, self.threads = now, max(1, sum(self.client.nthreads().values()))
        return self.threads

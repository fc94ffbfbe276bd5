"""One batch task, as a worker runs it: the step on one input, its log, its products, its cost.

A task never leaves a half-written product: the step writes into a staging
folder of its own (per attempt, so a task re-run after its worker died
starts clean) and the products move next to the others only when the step
succeeded. The log file is written either way.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mirispec_steps.batch.plan import BatchTask, build_step
from mirispec_steps.errors import MirispecError
from mirispec_steps.log_sharing import LENDING, ThreadFilter

__all__ = ["STAGING", "TaskRecord", "run_task", "staging_root"]

log = logging.getLogger(__name__)

#: Staging folder (inside the output folder) of the tasks' unfinished products.
STAGING = ".mirispec_batch"
#: Seconds between two readings of the worker's memory.
MEMORY_INTERVAL = 0.02
#: Loggers a task's log file records (stpipe's, jwst's and ours, CRDS, warnings).
TASK_LOGGERS = ("stpipe", "jwst", "mirispec_steps", "CRDS", "py.warnings", "stcal", "stdatamodels")
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"

_PROCESS_LOCK = threading.Lock()
_FROZEN = False


@dataclass
class TaskRecord:
    """
    What became of one task (a manifest row).

    Attributes
    ----------
    number : int
        Position in the batch.
    input : str
        The input file.
    status : str
        ``done``, ``failed``, ``skipped`` (the step marked the input SKIPPED),
        ``resumed`` (done by an earlier batch with the same parameters).
    outputs : list of str
        Files written (names inside the output folder).
    log : str
        The task's log file.
    error : str
        Why it failed ("" otherwise).
    seconds : float
        Wall time of the task on its worker.
    peak_memory_mb : float
        Peak resident memory of the worker process during the task.
    task_memory_mb : float
        That peak minus the worker's memory when the task started.
    worker : str
        Host and process that ran it.
    parameters_hash : str
        The parameters' hash the task ran with.
    package_version, jwst_version : str
        Software versions on the worker.
    integrations : str
        ``"start:stop"`` for a chunk of a time series, "" otherwise.
    """

    number: int
    input: str
    status: str
    outputs: list[str] = field(default_factory=list)
    log: str = ""
    error: str = ""
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    task_memory_mb: float = 0.0
    worker: str = ""
    parameters_hash: str = ""
    package_version: str = ""
    jwst_version: str = ""
    integrations: str = ""

    @classmethod
    def failed(cls, task: BatchTask, error: str = "", integrations: str = "") -> TaskRecord:
        """
        A record of ``task`` on this process, ``failed`` until the task says otherwise.

        Parameters
        ----------
        task : BatchTask
            The task.
        error : str
            Why it failed.
        integrations : str
            The manifest's ``integrations`` entry.

        Returns
        -------
        TaskRecord
            With the task's identity, this process and the software versions.
        """
        import jwst

        from mirispec_steps import __version__

        return cls(
            number=task.number,
            input=task.input,
            status="failed",
            log=task.log_path,
            error=error,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            parameters_hash=task.parameters_hash,
            package_version=__version__,
            jwst_version=jwst.__version__,
            integrations=integrations,
        )


def staging_root(output_dir: str | Path) -> Path:
    """The folder of unfinished products inside ``output_dir``."""
    return Path(output_dir) / STAGING


def run_task(task: BatchTask, keep_staged: bool = False) -> TaskRecord:
    """
    Run one task on this worker (never raises: a failure is a record).

    Parameters
    ----------
    task : BatchTask
        From :func:`~mirispec_steps.batch.plan.plan_tasks`.
    keep_staged : bool
        Leave the products in the staging folder (chunks of a time series,
        which are stitched afterwards); their paths are the outputs.

    Returns
    -------
    TaskRecord
        Status, outputs, error, time and memory.
    """
    _apply_environment(dict(task.environment))
    staging = staging_root(task.output_dir) / f"{task.key}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    record = TaskRecord.failed(
        task, integrations="" if task.integrations is None else "{}:{}".format(*task.integrations)
    )
    start = time.perf_counter()
    with _TaskLog(task.log_path) as task_log, _MemoryMonitor() as memory:
        try:
            task_log.info(f"mirispec batch task {task.key} on {record.worker}: {task.input}")
            step, positional = build_step([*task.argv, f"--output_dir={staging}"])
            _freeze_imported_objects()
            result = step.run(*_inputs(positional, task))
            record.status = "skipped" if _was_skipped(result, step) else "done"
            record.outputs = _collect(staging, Path(task.output_dir), keep_staged)
        except Exception as exc:  # one input's failure is that input's, not the batch's
            record.status = "failed"
            record.error = _describe(exc)
            task_log.error(f"failed: {record.error}\n{traceback.format_exc()}")
        finally:
            if not keep_staged or record.status == "failed":
                shutil.rmtree(staging, ignore_errors=True)
    record.seconds = time.perf_counter() - start
    record.peak_memory_mb = memory.peak / 2**20
    record.task_memory_mb = max(memory.peak - memory.start, 0) / 2**20
    return record


def _freeze_imported_objects() -> None:
    """
    Once per worker process: move everything alive now (imported modules) out of the GC's reach.

    stpipe runs ``gc.collect()`` at the start of every step, and a full
    collection walks every object of the process: about 0.2 s with jwst,
    stpipe, astropy and dask loaded, four times per MRS pipeline. After
    ``gc.freeze()`` a collection walks only what the tasks created.
    """
    global _FROZEN
    with _PROCESS_LOCK:
        if not _FROZEN:
            gc.collect()
            gc.freeze()
            _FROZEN = True


def _inputs(positional, task: BatchTask):
    """The step's input: the file, or a chunk of its integrations."""
    if task.integrations is None:
        return positional
    from mirispec_steps.batch.timeseries import integration_chunk

    return [integration_chunk(positional[0], *task.integrations), *positional[1:]]


def _was_skipped(result, step) -> bool:
    """True when the step marked its (only) product SKIPPED."""
    alias = getattr(step, "class_alias", None)
    cal_step = getattr(getattr(result, "meta", None), "cal_step", None)
    return bool(alias and cal_step is not None and getattr(cal_step, alias, None) == "SKIPPED")


def _collect(staging: Path, output_dir: Path, keep_staged: bool) -> list[str]:
    """Move the staged products next to the others (or leave them staged); their names."""
    names = []
    for path in sorted(staging.iterdir()):
        if not path.is_file():
            continue
        if keep_staged:
            names.append(str(path))
            continue
        os.replace(path, output_dir / path.name)
        names.append(path.name)
    return names


def _describe(exc: BaseException) -> str:
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, MirispecError):
        return message
    return f"{type(exc).__name__}: {message}"


def _apply_environment(settings: dict[str, str]) -> None:
    """The client's CRDS and stpipe settings on this worker (the CRDS client reads them once)."""
    with _PROCESS_LOCK:
        changed = {k: v for k, v in settings.items() if os.environ.get(k) != v}
        if not changed:
            return
        os.environ.update(changed)
        if any(key.startswith("CRDS_") for key in changed):
            from crds.core.utils import clear_function_caches

            clear_function_caches()


class _TaskLog:
    """The task's lines (this thread's only) in its log file, at INFO and above."""

    def __init__(self, path: str):
        self.path = path
        self.logger = logging.getLogger("mirispec_steps.tasks")

    def __enter__(self):
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, mode="w", encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.handler.setLevel(logging.INFO)
        self.handler.addFilter(ThreadFilter())
        self.loan = LENDING.lend(TASK_LOGGERS, [self.handler], logging.INFO)
        return self.logger

    def __exit__(self, *exc_info):
        LENDING.give_back(self.loan)
        self.handler.close()
        return False


class _MemoryMonitor:
    """Peak resident memory of this process while the block runs (sampled in a thread)."""

    def __enter__(self):
        import psutil

        self._process = psutil.Process()
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(MEMORY_INTERVAL):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)
        return False


def stitch_task(task: BatchTask, chunks: list[TaskRecord]) -> TaskRecord:
    """
    Stitch the chunks of one time series into its products (never raises).

    Every x1dints a chunk wrote becomes one x1dints with all the chunks'
    rows; other side products of chunks (plots of a few integrations) are
    dropped, which the log says.

    Parameters
    ----------
    task : BatchTask
        The whole input's task (its ``integrations`` is None).
    chunks : list of TaskRecord
        The chunks' records, in integration order (outputs still staged).

    Returns
    -------
    TaskRecord
        One record for the input: seconds summed over chunks and stitching,
        the largest peak memory.
    """
    from mirispec_steps.batch.timeseries import stitch_x1dints

    start = time.perf_counter()
    record = TaskRecord.failed(task, integrations=f"{len(chunks)} chunks")
    staged_folders = {Path(path).parent for chunk in chunks for path in chunk.outputs}
    with _TaskLog(task.log_path) as task_log:
        try:
            failed = [chunk for chunk in chunks if chunk.status == "failed"]
            if failed:
                raise RuntimeError(
                    "; ".join(f"integrations {c.integrations}: {c.error}" for c in failed)
                )
            names = [Path(path).name for path in chunks[0].outputs]
            first, last = _integration_range(task.input)
            for name in names:
                if not name.endswith("x1dints.fits"):
                    task_log.info(f"not kept for a chunked time series: {name}")
                    continue
                paths = [str(Path(p)) for chunk in chunks for p in chunk.outputs
                         if Path(p).name == name]  # fmt: skip
                stitch_x1dints(paths, str(Path(task.output_dir) / name), (first, last))
                record.outputs.append(name)
                task_log.info(f"stitched {len(paths)} chunks into {name}")
            record.status = "done"
        except Exception as exc:
            record.error = _describe(exc)
            task_log.error(f"failed: {record.error}")
        finally:
            for folder in staged_folders:
                shutil.rmtree(folder, ignore_errors=True)
    record.seconds = sum(c.seconds for c in chunks) + time.perf_counter() - start
    record.peak_memory_mb = max((c.peak_memory_mb for c in chunks), default=0.0)
    record.task_memory_mb = max((c.task_memory_mb for c in chunks), default=0.0)
    return record


def _integration_range(path: str) -> tuple[int, int]:
    """The file's first and last integration numbers (1-based)."""
    from astropy.io import fits

    from mirispec_steps.batch.timeseries import count_integrations

    header = fits.getheader(path, 0)
    first = int(header.get("INTSTART", 1) or 1)
    return first, first + count_integrations(path) - 1

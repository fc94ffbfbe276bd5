"""Run a batch on dask.distributed: a local cluster of process workers, or a cluster by address.

:func:`run_batch` plans on the client (parameters checked, references
resolved once, one task per input or per integration chunk), sends the tasks,
records each result in the manifest as it arrives, and returns the manifest.
A failed input fails alone; a worker that dies has its task re-run elsewhere
by the scheduler (up to dask's ``allowed-failures``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from mirispec_steps.batch.inputs import expand_inputs
from mirispec_steps.batch.manifest import Manifest, read_manifest, summary_line
from mirispec_steps.batch.plan import BatchTask, configure_step, plan_tasks, product_root
from mirispec_steps.batch.task import TaskRecord, run_task, staging_root, stitch_task
from mirispec_steps.batch.timeseries import chunk_ranges, chunking_refusal, count_integrations
from mirispec_steps.errors import ParameterError
from mirispec_steps.progress import progress

__all__ = ["BatchPlan", "plan_batch", "run_batch", "resumable"]

log = logging.getLogger("mirispec_steps.batch")

#: Seconds between two rewrites of the manifest while the batch runs.
MANIFEST_INTERVAL = 2.0
#: Local workers keep glibc's adaptive allocator: distributed sets MALLOC_TRIM_THRESHOLD_
#: (to return memory to the system sooner), which makes every large NumPy temporary a
#: fresh mmap and page-faulting: an MRS pipeline took 3.5 s instead of 1.9 s. The
#: workers' statistical profiler (a stack sample every 10 ms) is off: a task is one call.
WORKER_ENVIRONMENT = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}


@dataclasses.dataclass
class BatchPlan:
    """
    What a batch will do, before anything runs.

    Attributes
    ----------
    tasks : list of BatchTask
        One per input still to run (whole inputs).
    chunks : dict
        Input number to its chunk tasks, for time series split in chunks.
    resumed : list of TaskRecord
        Inputs an earlier batch finished with the same parameters.
    meta : dict
        Batch-level facts for the manifest.
    """

    tasks: list[BatchTask]
    chunks: dict[int, list[BatchTask]]
    resumed: list[TaskRecord]
    meta: dict


def plan_batch(
    inputs: Sequence[str],
    step: str,
    parameters: Sequence[str] = (),
    output_dir: str | Path = ".",
    resume: bool = False,
    chunk_integrations: int | None = None,
    resolve_references: bool = True,
) -> BatchPlan:
    """
    Check and plan a batch on the client (see :func:`run_batch` for the parameters).

    Returns
    -------
    BatchPlan
        The tasks, chunks and resumed inputs.
    """
    import jwst

    from mirispec_steps import __version__

    if chunk_integrations is not None and chunk_integrations < 1:
        raise ParameterError(f"chunk_integrations must be at least 1, not {chunk_integrations}")
    configuration, instance = configure_step(step, parameters)
    paths = expand_inputs(inputs)
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan_tasks(paths, configuration, instance, output_dir, resolve_references)
    meta = {
        "step": configuration.identifier,
        "step_class": configuration.class_name,
        "arguments": list(configuration.parameters),
        "parameters": configuration.pars,
        "parameters_hash": configuration.parameters_hash,
        "package_version": __version__,
        "jwst_version": jwst.__version__,
        "python": platform.python_version(),
        "n_inputs": len(tasks),
        "chunk_integrations": chunk_integrations,
    }
    resumed = []
    if resume:
        earlier = read_manifest(output_dir)
        still = []
        for task in tasks:
            record = resumable(task, earlier.get(task.input, []), output_dir, __version__)
            if record is None:
                still.append(task)
            else:
                resumed.append(record)
        tasks = still
    chunks = {}
    if chunk_integrations is not None:
        refusal = chunking_refusal(instance)
        for task in tasks:
            n_int = count_integrations(task.input)
            if n_int <= chunk_integrations:
                continue
            if refusal is not None:
                raise ParameterError(f"cannot split {Path(task.input).name} in chunks: {refusal}")
            root = product_root(Path(task.input))
            chunks[task.number] = [
                dataclasses.replace(
                    task,
                    integrations=(start, stop),
                    log_path=str(output_dir / f"{root}_ints{start + 1}-{stop}.log"),
                )
                for start, stop in chunk_ranges(n_int, chunk_integrations)
            ]
    return BatchPlan(tasks, chunks, resumed, meta)


def resumable(
    task: BatchTask, earlier: list[TaskRecord], output_dir: Path, version: str
) -> TaskRecord | None:
    """
    The ``resumed`` record of an input an earlier batch finished, or None to run it.

    Parameters
    ----------
    task : BatchTask
        The input's task in this batch.
    earlier : list of TaskRecord
        Its rows in the earlier manifest.
    output_dir : Path
        The output folder.
    version : str
        This package's version.

    Returns
    -------
    TaskRecord or None
        Finished with the same parameters' hash and package version, and
        every output still there: its record, marked ``resumed``.
    """
    for record in earlier:
        if (
            record.status in ("done", "resumed", "skipped")
            and record.parameters_hash == task.parameters_hash
            and record.package_version == version
            and record.outputs
            and all((output_dir / name).is_file() for name in record.outputs)
        ):
            return dataclasses.replace(record, status="resumed", seconds=0.0)
    return None


def run_batch(
    inputs: Sequence[str],
    step: str,
    parameters: Sequence[str] = (),
    output_dir: str | Path = ".",
    workers: int | None = None,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
    client=None,
    resume: bool = False,
    chunk_integrations: int | None = None,
    resolve_references: bool = True,
    on_record: Callable[[TaskRecord], None] | None = None,
) -> Manifest:
    """
    Run a step or pipeline over many inputs on dask.distributed.

    Parameters
    ----------
    inputs : sequence of str
        Files, glob patterns, association files, list files (see
        :func:`~mirispec_steps.batch.inputs.expand_inputs`).
    step : str
        A step or pipeline alias (``lrs_extract``), class path, parameter
        file, or packaged parameter file name (``mirispec-pars``).
    parameters : sequence of str
        strun-style arguments, e.g. ``["--steps.mrs_extract.method=aperture"]``.
    output_dir : str or Path
        Where products, per-input logs and the manifest go.
    workers : int or None
        Process workers of the local cluster (default: one per core).
    threads_per_worker : int
        Threads per local worker (1: each task has a process to itself).
    scheduler : str or None
        Address of an existing dask scheduler (``tcp://host:8786``); no local
        cluster is started.
    client : distributed.Client or None
        An existing client to use (neither closed nor reconfigured).
    resume : bool
        Skip inputs whose products an earlier batch in ``output_dir`` wrote
        with the same parameters' hash and package version.
    chunk_integrations : int or None
        Split time series longer than this into chunks of integrations run in
        parallel and stitched into one x1dints.
    resolve_references : bool
        Resolve reference files on the client and hand them to the tasks.
    on_record : callable or None
        Called with each record as it arrives (progress displays, tests).

    Returns
    -------
    Manifest
        One row per input; also written as ECSV and JSON in ``output_dir``.

    Raises
    ------
    ParameterError, InputDataError
        Before anything runs: an unknown step, a parameter strun refuses,
        missing inputs, inputs whose products would collide, chunks asked of
        a step that cannot be chunked.
    """
    started = time.perf_counter()
    plan = plan_batch(inputs, step, parameters, output_dir, resume, chunk_integrations,
                      resolve_references)  # fmt: skip
    manifest = Manifest(Path(output_dir).resolve(), plan.meta, list(plan.resumed))
    manifest.meta["started"] = datetime.now(UTC).isoformat(timespec="seconds")
    manifest.meta["complete"] = False
    for record in plan.resumed:
        log.info(f"resumed (done earlier): {Path(record.input).name}")
    owned = []
    try:
        if client is None:
            client, owned = _connect(scheduler, workers, threads_per_worker)
        manifest.meta["scheduler"] = client.scheduler.address
        manifest.meta["n_workers"] = len(client.scheduler_info().get("workers", {}))
        _run_plan(client, plan, manifest, on_record)
        manifest.meta["complete"] = True
    finally:
        manifest.meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        manifest.meta["seconds"] = round(time.perf_counter() - started, 3)
        manifest.records.sort(key=lambda r: r.number)
        manifest.write()
        for resource in reversed(owned):
            resource.close()
        _remove_staging(manifest.output_dir)
    log.info(summary_line(manifest))
    return manifest


def _connect(scheduler, workers, threads_per_worker):
    """A client to the given scheduler, or to a new local cluster of process workers."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        client = Client(scheduler)
        log.info(f"connected to the dask scheduler {scheduler}")
        return client, [client]
    n_workers = workers or os.cpu_count() or 1
    with dask.config.set(WORKER_ENVIRONMENT):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=":0" if _has_dashboard() else None,
        )
    client = Client(cluster)
    link = (
        f", dashboard {client.dashboard_link}"
        if _has_dashboard()
        else " (no dashboard: pip install bokeh for one)"
    )
    log.info(
        f"local dask cluster: {n_workers} process worker(s) x {threads_per_worker} thread(s){link}"
    )
    return client, [cluster, client]


def _has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _run_plan(client, plan: BatchPlan, manifest: Manifest, on_record) -> None:
    """Submit the tasks and record each result as it arrives."""
    from distributed import as_completed

    futures = {}
    for task in plan.tasks:
        chunk_tasks = plan.chunks.get(task.number)
        if chunk_tasks is None:
            future = client.submit(run_task, task, key=task.key, pure=False)
        else:
            parts = [
                client.submit(run_task, chunk, True, key=chunk.key, pure=False)
                for chunk in chunk_tasks
            ]
            future = client.submit(stitch_task, task, parts, key=f"{task.key}-stitch", pure=False)
        futures[future] = task
    log.info(
        f"{len(futures)} input(s) sent to {len(client.scheduler_info().get('workers', {}))} "
        f"worker(s){f', {len(plan.resumed)} resumed' if plan.resumed else ''}"
    )
    last_write = time.perf_counter()
    completed = as_completed(list(futures))
    try:
        for future in progress(completed, "batch inputs finished", log, total=len(futures)):
            record = _record_of(future, futures[future])
            manifest.records.append(record)
            if record.status == "failed":
                log.warning(f"{Path(record.input).name} failed: {record.error}")
            if on_record is not None:
                on_record(record)
            if time.perf_counter() - last_write > MANIFEST_INTERVAL:
                manifest.write()
                last_write = time.perf_counter()
    except BaseException:
        client.cancel(list(futures))
        raise


def _record_of(future, task: BatchTask) -> TaskRecord:
    """The task's record; a task the cluster could not run (its workers died) is a failure."""
    try:
        return future.result()
    except Exception as exc:
        record = TaskRecord.failed(task, error=f"{type(exc).__name__}: {exc}")
        record.worker = ""  # no worker finished it
        return record


def _remove_staging(output_dir: Path) -> None:
    """Drop the staging folder: finished products have moved out, a killed attempt's are void."""
    staging = staging_root(output_dir)
    if staging.is_dir():
        shutil.rmtree(staging, ignore_errors=True)

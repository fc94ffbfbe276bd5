"""Batch processing on dask: speed-up, per-task overhead, memory, and planning a large batch.

1. 16 simulated MRS exposures through ``mrs_point_source``: a plain serial
   loop of ``Pipeline.call`` in this process, against ``run_batch`` on a
   local cluster of 2 process workers (started and warmed up beforehand,
   and timed separately) -> speed-up.
2. The same 16 on a 1-worker cluster against the plain loop -> the batch's
   overhead per task (pickling, scheduling, task log, staging, manifest).
   The workers take the imported objects out of the garbage collector's
   reach (``gc.freeze``; stpipe collects at every step), which a plain loop
   does not: the loop is also timed with the same freeze, to show the
   batch machinery's own cost.
3. Peak resident memory per worker, from the manifest.
4. A 1000-input plan (links to one small LRS file, references resolved
   once) built with ``plan_batch`` and its 1000 tasks scheduled on the
   cluster as no-op tasks (no data read): seconds for each part.

Run: ``python benchmarks/bench_batch.py [--exposures 16]``
"""

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
warnings.simplefilter("ignore")


def _simulate_mrs(folder: Path, n_exposures: int):
    from mirispec_steps.simulate.mrs import simulate_mrs

    first = simulate_mrs(seed=300, alpha=0.2, beta=-0.1)
    paths, references = [], None
    for index in range(n_exposures):
        simulated = first if index == 0 else first.redraw(seed=300 + index)
        files = simulated.write(folder, stem=f"bench_mrs_{index + 1:02d}")
        references = references or files
        paths.append(str(files["rate"]))
    calibrate = {
        "override_photom": str(references["photom"]),
        "override_fringe": str(references["fringe"]),
        "background": str(references["background"]),
    }
    return paths, calibrate


def _serial_loop(paths, calibrate, out: Path, frozen: bool = False) -> float:
    """A plain loop; ``frozen``: with the imported objects out of the GC's reach, as a worker."""
    import gc

    from mirispec_steps import MrsPointSourcePipeline

    if frozen:
        gc.collect()
        gc.freeze()
    start = time.perf_counter()
    for path in paths:
        MrsPointSourcePipeline.call(
            path, steps={"mrs_calibrate": calibrate}, output_dir=str(out), save_results=True
        )
    elapsed = time.perf_counter() - start
    if frozen:
        gc.unfreeze()
    return elapsed


def _cluster(n_workers: int):
    import dask
    from distributed import Client, LocalCluster

    from mirispec_steps.batch.runner import WORKER_ENVIRONMENT

    start = time.perf_counter()
    with dask.config.set(WORKER_ENVIRONMENT):  # as run_batch's own local cluster
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    started = time.perf_counter() - start
    # Warm-up: the imports a first task would pay (jwst, stpipe, the package).
    client.run(lambda: __import__("mirispec_steps.batch.task") and __import__("jwst.assign_wcs"))
    return cluster, client, started, time.perf_counter() - start - started


def _batch(paths, calibrate, out: Path, client):
    from mirispec_steps.batch import run_batch

    parameters = [f"--steps.mrs_calibrate.{key}={value}" for key, value in calibrate.items()]
    start = time.perf_counter()
    manifest = run_batch(paths, "mrs_point_source", parameters, output_dir=out, client=client)
    elapsed = time.perf_counter() - start
    assert manifest.counts()["done"] == len(paths), manifest.counts()
    return elapsed, manifest


def _plan_and_schedule(client, folder: Path, n_inputs: int):
    from mirispec_steps.batch import plan_batch
    from mirispec_steps.simulate import simulate_lrs

    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "one_cal.fits"
    simulate_lrs("cal", seed=1).model.save(source)
    links = folder / "links"
    links.mkdir()
    for index in range(n_inputs):
        os.symlink(source, links / f"exposure{index:04d}_cal.fits")
    start = time.perf_counter()
    plan = plan_batch([str(links / "*_cal.fits")], "lrs_box_extract", output_dir=folder / "out")
    planned = time.perf_counter() - start
    start = time.perf_counter()
    futures = [client.submit(_no_op, task, key=task.key, pure=False) for task in plan.tasks]
    numbers = client.gather(futures)
    scheduled = time.perf_counter() - start
    assert sorted(numbers) == list(range(1, n_inputs + 1))
    return planned, scheduled


def _no_op(task):
    return task.number


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--exposures", type=int, default=16)
    parser.add_argument("--plan-size", type=int, default=1000)
    args = parser.parse_args()

    from mirispec_steps.simulate import offline_crds

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    with offline_crds():
        paths, calibrate = _simulate_mrs(work / "in", args.exposures)
        serial = _serial_loop(paths, calibrate, work / "serial")
        per_exposure = serial / len(paths)
        print(f"plain serial loop (this process): {serial:.1f} s for {len(paths)} MRS exposures "
              f"({per_exposure:.2f} s each)")  # fmt: skip

        cluster, client, started, warmed = _cluster(2)
        two, manifest = _batch(paths, calibrate, work / "two", client)
        print(f"2 workers: cluster start {started:.1f} s + warm-up {warmed:.1f} s (once), batch "
              f"{two:.1f} s -> speed-up {serial / two:.2f}x (target >= 1.7x); "
              f"{serial / (two + started + warmed):.2f}x counting the start")  # fmt: skip
        peaks = {}
        for record in manifest.records:
            peaks[record.worker] = max(peaks.get(record.worker, 0.0), record.peak_memory_mb)
        task_memory = max(r.task_memory_mb for r in manifest.records)
        print("peak resident memory per worker: "
              + ", ".join(f"{worker} {peak:.0f} MiB" for worker, peak in sorted(peaks.items()))
              + f"; largest increase during one task {task_memory:.0f} MiB")  # fmt: skip
        planned, scheduled = _plan_and_schedule(client, work / "plan", args.plan_size)
        print(f"{args.plan_size}-input plan: built in {planned:.2f} s, its tasks scheduled and "
              f"run as no-ops in {scheduled:.2f} s; total {planned + scheduled:.2f} s "
              "(target < 5 s)")  # fmt: skip
        client.close()
        cluster.close()

        cluster, client, _, _ = _cluster(1)
        one, _ = _batch(paths, calibrate, work / "one", client)
        frozen = _serial_loop(paths, calibrate, work / "frozen", frozen=True)
        print(f"1 worker: batch {one:.1f} s vs plain loop {serial:.1f} s -> overhead "
              f"{(one - serial) / len(paths):+.3f} s per task (target < 0.3 s); against a plain "
              f"loop that also freezes the imports out of the GC ({frozen:.1f} s): "
              f"{(one - frozen) / len(paths):+.3f} s per task")  # fmt: skip
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()

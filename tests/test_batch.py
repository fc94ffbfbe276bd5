"""mirispec-batch on real dask clusters: identity with serial runs, faults, resume, chunks.

The clusters are real: a LocalCluster of two process workers (started by
run_batch itself, and one shared by several tests), and a scheduler and a
worker started as subprocesses with dask's own command line.

No accuracy test here: batch products are compared with serial products of
the same data and step (simulated with the package's own PSF models), not
with the truth; accuracy on mismatched PSFs is tested per step.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from numpy.testing import assert_array_equal
from stdatamodels.jwst import datamodels

from mirispec_steps import LrsBoxExtractStep, LrsExtractPipeline, MrsPointSourcePipeline
from mirispec_steps.batch import read_manifest, run_batch
from mirispec_steps.batch.cli import main as batch_main
from mirispec_steps.batch.inputs import expand_inputs
from mirispec_steps.batch.plan import BatchTask, configure_step, forwarded_environment
from mirispec_steps.batch.task import run_task
from mirispec_steps.batch.timeseries import chunk_ranges
from mirispec_steps.errors import InputDataError, ParameterError
from mirispec_steps.simulate import simulate_lrs
from mirispec_steps.simulate.mrs import simulate_mrs

DASK = str(Path(sys.executable).parent / "dask")


def serially(call, *args, **kwargs):
    """
    The serial reference, run in this process with the machine's BLAS threads.

    distributed starts its workers with OMP/MKL/OPENBLAS_NUM_THREADS=1; the
    steps run on one BLAS thread wherever they run (core.blas), so the
    products must be equal to the last bit.
    """
    return call(*args, **kwargs)


def assert_same_spectra(product, reference):
    """Every column of every spectrum table equal (NaN where NaN)."""
    assert len(product.spec) == len(reference.spec)
    for ours, theirs in zip(product.spec, reference.spec, strict=True):
        table, expected = ours.spec_table, theirs.spec_table
        assert table.dtype.names == expected.dtype.names
        for name in table.dtype.names:
            assert_array_equal(np.asarray(table[name]), np.asarray(expected[name]), err_msg=name)


@pytest.fixture(scope="module")
def cluster_client():
    """A LocalCluster of two process workers shared by the tests that do not start their own."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)  # fmt: skip
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def lrs_files(tmp_path_factory):
    """Four LRS cal exposures, an apcorr file, a corrupt file and an MRS rate (wrong mode)."""
    from mirispec_steps.simulate import write_lrs_apcorr

    folder = tmp_path_factory.mktemp("lrs_batch")
    paths = []
    for index, nod in enumerate("ABAB"):
        path = folder / f"lrs_{index + 1}_cal.fits"
        simulate_lrs("cal", nod=nod, seed=70 + index).model.save(path)
        paths.append(path)
    corrupt = folder / "broken_cal.fits"
    corrupt.write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    mrs = simulate_mrs(seed=5, noise=False)
    wrong = mrs.write(folder, stem="mrs_wrong")["rate"]
    apcorr = str(write_lrs_apcorr(folder / "apcorr.fits"))
    return {"cal": paths, "corrupt": corrupt, "wrong": Path(wrong), "apcorr": apcorr,
            "folder": folder}  # fmt: skip


def lrs_parameters(files):
    return [f"--steps.lrs_box_extract.override_apcorr={files['apcorr']}"]


def box_parameters(files):
    return [f"--override_apcorr={files['apcorr']}"]


def serial_lrs(path, files):
    return serially(
        LrsExtractPipeline.call,
        str(path),
        steps={"lrs_box_extract": {"override_apcorr": files["apcorr"]}},
    )


# ------------------------------------------------------------------ planning (no cluster)


def test_inputs_from_globs_lists_and_associations(tmp_path):
    for name in ("b_cal.fits", "a_cal.fits", "c_rate.fits"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "asn.json").write_text(json.dumps({"products": [{"members": []}]}))
    listing = tmp_path / "inputs.txt"
    listing.write_text("# science\nc_rate.fits\n*_cal.fits\n")
    found = expand_inputs([str(listing), str(tmp_path / "asn.json"), f"@{listing}"])
    assert [p.name for p in found] == ["c_rate.fits", "a_cal.fits", "b_cal.fits", "asn.json"]
    with pytest.raises(InputDataError, match="nothing_\\*.fits: matches no file"):
        expand_inputs([str(tmp_path / "nothing_*.fits"), str(tmp_path / "missing.fits")])


@pytest.mark.parametrize(
    ("step", "parameters", "message"),
    [
        ("lrs_extract", ["--no_such_parameter=3"], "strun would refuse"),
        ("lrs_extract", ["--steps.lrs_box_extract.smoothing_length=many"], "smoothing_length"),
        ("lrs_extract", ["--output_dir=elsewhere"], "the batch sets where products go"),
        ("no_such_step", [], "no_such_step"),
    ],
)
def test_bad_step_or_parameters_stop_the_batch_before_it_starts(step, parameters, message,
                                                                 lrs_files, tmp_path):  # fmt: skip
    with pytest.raises(ParameterError, match=message):
        run_batch([str(lrs_files["cal"][0])], step, parameters, output_dir=tmp_path)
    assert not (tmp_path / "mirispec_batch_manifest.json").exists()


def test_inputs_that_would_overwrite_each_others_products_are_refused(lrs_files, tmp_path):
    twin = tmp_path / "lrs_1_rate.fits"  # same root as lrs_1_cal.fits
    twin.write_bytes(lrs_files["cal"][0].read_bytes())
    with pytest.raises(InputDataError, match="same name"):
        run_batch([str(lrs_files["cal"][0]), str(twin)], "lrs_box_extract",
                  output_dir=tmp_path / "out")  # fmt: skip


def test_parameters_hash_follows_the_parameters():
    first, _ = configure_step("lrs_extract", ["--steps.lrs_box_extract.smoothing_length=5"])
    again, _ = configure_step("lrs_extract", ["--steps.lrs_box_extract.smoothing_length=5"])
    other, _ = configure_step("lrs_extract", ["--steps.lrs_box_extract.smoothing_length=7"])
    assert first.parameters_hash == again.parameters_hash != other.parameters_hash


def test_chunk_ranges_cover_the_series_in_order():
    for n_int, size in ((1000, 250), (10, 3), (7, 7), (5, 100)):
        ranges = chunk_ranges(n_int, size)
        assert ranges[0][0] == 0 and ranges[-1][1] == n_int
        assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:], strict=True))
        assert max(b - a for a, b in ranges) <= size


def test_task_logs_keep_their_own_lines_when_tasks_share_a_process(lrs_files, tmp_path):
    """Two tasks in threads of one process (a threaded worker): each log has its input only."""
    configuration, _ = configure_step("lrs_box_extract", [])
    tasks = [
        BatchTask(
            number=i + 1,
            input=str(path),
            argv=("lrs_box_extract", str(path), *box_parameters(lrs_files)),
            output_dir=str(tmp_path),
            log_path=str(tmp_path / f"{path.stem}.log"),
            parameters_hash=configuration.parameters_hash,
            environment=forwarded_environment(),
        )  # fmt: skip
        for i, path in enumerate(lrs_files["cal"][:2])
    ]
    records = [None, None]

    def run(index):
        records[index] = run_task(tasks[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status for r in records] == ["done", "done"], [r.error for r in records]
    for task, other in ((tasks[0], tasks[1]), (tasks[1], tasks[0])):
        text = Path(task.log_path).read_text()
        assert Path(task.input).name in text and "LrsBoxExtractStep done" in text
        assert Path(other.input).name not in text
    assert not (tmp_path / ".mirispec_batch").exists() or not any(
        (tmp_path / ".mirispec_batch").iterdir()
    )


# ------------------------------------------------------------------ on clusters


def test_mrs_batch_on_its_own_local_cluster_equals_serial_runs(tmp_path):
    """Four MRS exposures through mrs_point_source on run_batch's LocalCluster (2 processes)."""
    first = simulate_mrs(seed=80, alpha=0.2, beta=-0.1)
    inputs, files = [], None
    for index in range(4):
        simulated = first if index == 0 else first.redraw(seed=80 + index)
        written = simulated.write(tmp_path / "in", stem=f"mrs_{index + 1}")
        files = files or written
        inputs.append(written["rate"])
    calibrate = {"override_photom": str(files["photom"]), "override_fringe": str(files["fringe"]),
                 "background": str(files["background"])}  # fmt: skip
    parameters = [f"--steps.mrs_calibrate.{key}={value}" for key, value in calibrate.items()]
    manifest = run_batch([str(p) for p in inputs], "mrs_point_source", parameters,
                         output_dir=tmp_path / "out", workers=2)  # fmt: skip
    assert manifest.meta["complete"] and manifest.meta["n_workers"] == 2
    assert [r.status for r in manifest.records] == ["done"] * 4, [r.error for r in manifest.records]
    assert len({r.worker for r in manifest.records}) == 2  # both workers took tasks
    for path, record in zip(inputs, manifest.records, strict=True):
        serial = serially(
            MrsPointSourcePipeline.call, str(path), steps={"mrs_calibrate": calibrate}
        )
        root = Path(path).name.removesuffix("_rate.fits")
        assert record.outputs == [f"{root}_x1d.fits"]
        with datamodels.open(tmp_path / "out" / record.outputs[0]) as product:
            assert_same_spectra(product, serial)
        assert record.peak_memory_mb > 50 and record.seconds > 0


def test_lrs_batch_equals_serial_and_fails_only_the_bad_inputs(lrs_files, cluster_client,
                                                                tmp_path):  # fmt: skip
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join(str(p) for p in (*lrs_files["cal"], lrs_files["corrupt"],
                                                  lrs_files["wrong"])))  # fmt: skip
    out = tmp_path / "out"
    manifest = run_batch([str(listing)], "lrs_extract", lrs_parameters(lrs_files),
                         output_dir=out, client=cluster_client)  # fmt: skip
    status = {Path(r.input).name: r for r in manifest.records}
    assert [status[p.name].status for p in lrs_files["cal"]] == ["done"] * 4
    broken, wrong = status["broken_cal.fits"], status[lrs_files["wrong"].name]
    assert broken.status == "failed" and broken.error and broken.outputs == []
    assert wrong.status == "failed" and "not LRS" in wrong.error
    assert "failed" in Path(wrong.log).read_text()
    for path in lrs_files["cal"]:
        record = status[path.name]
        root = path.name.removesuffix("_cal.fits")
        assert sorted(record.outputs) == [f"{root}_box_x1d.fits", f"{root}_x1d.fits"]
        serial = serial_lrs(path, lrs_files)
        with datamodels.open(out / f"{root}_x1d.fits") as product:
            assert_same_spectra(product, serial)
    # No half-written product of the failed inputs, no staging left.
    assert not list(out.glob("broken*fits")) and not (out / ".mirispec_batch").exists()
    table = Table.read(out / "mirispec_batch_manifest.ecsv")
    assert len(table) == 6 and set(table["status"]) == {"done", "failed"}
    assert table["seconds"].unit == "s" and table.meta["step"] == "lrs_extract"
    assert json.loads((out / "mirispec_batch_manifest.json").read_text())["meta"]["complete"]

    # --resume: the finished inputs are not run again; the failed ones are.
    again = run_batch([str(listing)], "lrs_extract", lrs_parameters(lrs_files), output_dir=out,
                      client=cluster_client, resume=True)  # fmt: skip
    statuses = {Path(r.input).name: r.status for r in again.records}
    assert [statuses[p.name] for p in lrs_files["cal"]] == ["resumed"] * 4
    assert statuses["broken_cal.fits"] == "failed"
    # Other parameters: nothing is resumed.
    changed = run_batch([str(p) for p in lrs_files["cal"][:1]], "lrs_extract",
                        [*lrs_parameters(lrs_files), "--steps.lrs_box_extract.smoothing_length=5"],
                        output_dir=out, client=cluster_client, resume=True)  # fmt: skip
    assert [r.status for r in changed.records] == ["done"]


def test_resume_after_an_interrupted_batch_runs_only_what_is_missing(lrs_files, cluster_client,
                                                                      tmp_path):  # fmt: skip
    inputs = [str(p) for p in lrs_files["cal"]]
    out = tmp_path / "out"

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(inputs, "lrs_box_extract", box_parameters(lrs_files), output_dir=out,
                  client=cluster_client, on_record=interrupt)  # fmt: skip
    earlier = read_manifest(out)
    meta = json.loads((out / "mirispec_batch_manifest.json").read_text())["meta"]
    assert not meta["complete"] and len(earlier) == 1
    finished = next(iter(earlier))
    product = out / earlier[finished][0].outputs[0]
    written = product.stat().st_mtime_ns

    resumed = run_batch(inputs, "lrs_box_extract", box_parameters(lrs_files), output_dir=out,
                        client=cluster_client, resume=True)  # fmt: skip
    statuses = {r.input: r.status for r in resumed.records}
    assert statuses.pop(finished) == "resumed"
    assert set(statuses.values()) == {"done"} and len(statuses) == 3
    assert product.stat().st_mtime_ns == written
    assert len(resumed.records) == 4 and resumed.meta["complete"]


def test_a_worker_killed_mid_batch_loses_nothing(lrs_files, cluster_client, tmp_path):
    """A worker process is killed while it runs a task: the task runs again elsewhere."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = []
    for copy in range(3):
        for path in lrs_files["cal"]:
            target = folder / f"c{copy}_{path.name}"
            os.link(path, target)
            inputs.append(str(target))
    killed = {}

    def kill_a_busy_worker(record):
        if killed:
            return
        busy = {address: keys for address, keys in cluster_client.processing().items() if keys}
        if not busy:
            return
        address, keys = next(iter(busy.items()))
        pids = cluster_client.run(os.getpid, workers=[address])
        killed["pid"] = pids[address]
        # Tasks the worker held: each must end on another process.
        killed["numbers"] = {int(str(key).split("-")[1]) for key in keys}
        os.kill(killed["pid"], signal.SIGKILL)

    manifest = run_batch(inputs, "lrs_optimal_extract", output_dir=tmp_path / "out",
                         client=cluster_client, on_record=kill_a_busy_worker)  # fmt: skip
    assert killed, "no worker was busy when the first result came"
    assert sorted(r.input for r in manifest.records) == sorted(inputs)  # each once
    assert [r.status for r in manifest.records] == ["done"] * len(inputs)
    held = [r for r in manifest.records if r.number in killed["numbers"]]
    assert held and all(not r.worker.endswith(f":{killed['pid']}") for r in held)
    for record in manifest.records:
        assert (tmp_path / "out" / record.outputs[0]).is_file()
    assert not (tmp_path / "out" / ".mirispec_batch").exists()
    cluster_client.wait_for_workers(2, timeout=60)


def test_time_series_in_chunks_equals_the_serial_x1dints(lrs_files, cluster_client, tmp_path):
    """1000 integrations in 4 chunks of 250, stitched: the serial run's spectra, byte for byte."""
    simulated = simulate_lrs("calints", n_integrations=1000, seed=90, bad_pixel_fraction=0.002)
    path = tmp_path / "tso_calints.fits"
    simulated.model.save(path)
    manifest = run_batch([str(path)], "lrs_box_extract", box_parameters(lrs_files),
                         output_dir=tmp_path / "out", client=cluster_client,
                         chunk_integrations=250)  # fmt: skip
    record = manifest.records[0]
    assert record.status == "done", record.error
    assert record.outputs == ["tso_box_x1dints.fits"] and record.integrations == "4 chunks"
    serial = serially(LrsBoxExtractStep.call, str(path), override_apcorr=lrs_files["apcorr"])
    with datamodels.open(tmp_path / "out" / "tso_box_x1dints.fits") as stitched:
        assert_same_spectra(stitched, serial)
        table = stitched.spec[0].spec_table
        assert_array_equal(table["INT_NUM"], np.arange(1, 1001))
        assert stitched.meta.exposure.integration_start == 1
        assert stitched.meta.exposure.integration_end == 1000
    logs = sorted(p.name for p in (tmp_path / "out").glob("*.log"))
    assert logs == ["tso.log", "tso_ints1-250.log", "tso_ints251-500.log", "tso_ints501-750.log",
                    "tso_ints751-1000.log"]  # fmt: skip

    with pytest.raises(ParameterError, match="trace, profile and weights"):
        run_batch([str(path)], "lrs_extract", output_dir=tmp_path / "other",
                  client=cluster_client, chunk_integrations=250)  # fmt: skip


def test_cli_on_a_scheduler_and_worker_started_as_subprocesses(lrs_files, tmp_path):
    """dask scheduler / dask worker on localhost, joined by address from mirispec-batch."""
    scheduler_file = tmp_path / "scheduler.json"
    environment = {**os.environ}
    processes = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--scheduler-file",
                str(scheduler_file),
                "--port",
                "0",
                "--no-dashboard",
            ],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),  # fmt: skip
    ]
    try:
        for _ in range(300):
            if scheduler_file.exists() and scheduler_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        processes.append(
            subprocess.Popen(
                [DASK, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        )
        out = tmp_path / "out"
        inputs = [str(p) for p in lrs_files["cal"][:2]]
        code = batch_main(["lrs_box_extract", *inputs, "--out", str(out), "--scheduler", address,
                           "--smoothing_length=3", *box_parameters(lrs_files)])  # fmt: skip
        assert code == 0
        manifest = json.loads((out / "mirispec_batch_manifest.json").read_text())
        assert manifest["meta"]["scheduler"] == address
        assert [r["status"] for r in manifest["records"]] == ["done", "done"]
        assert manifest["meta"]["parameters"]["smoothing_length"] == 3
        # A failing input makes the exit status 1; a refused batch 2.
        code = batch_main(["lrs_box_extract", str(lrs_files["wrong"]), "--out", str(out),
                           "--scheduler", address, *box_parameters(lrs_files)])  # fmt: skip
        assert code == 1
        assert batch_main(["lrs_box_extract", inputs[0], "--out", str(out), "--scheduler",
                           address, "--no_such=1"]) == 2  # fmt: skip
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)

"""The batch manifest: one row per input, as ECSV (a table) and JSON (programs, ``--resume``).

Both files are rewritten atomically while the batch runs (a batch that is
interrupted leaves a manifest of what finished) and once at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from mirispec_steps.batch.task import TaskRecord

__all__ = ["MANIFEST_NAME", "STATUSES", "Manifest", "read_manifest", "summary_line"]

#: Stem of the manifest files in the output folder.
MANIFEST_NAME = "mirispec_batch_manifest"
#: Every status a row can have.
STATUSES = ("done", "failed", "skipped", "resumed")


@dataclasses.dataclass
class Manifest:
    """
    The rows of a batch and what ran them.

    Attributes
    ----------
    output_dir : Path
        Where the manifest files go.
    meta : dict
        Batch-level facts: step, parameters, versions, scheduler, start and
        end, whether it completed.
    records : list of TaskRecord
        One per input, in input order once complete.
    """

    output_dir: Path
    meta: dict
    records: list[TaskRecord] = dataclasses.field(default_factory=list)

    @property
    def json_path(self) -> Path:
        """The JSON manifest."""
        return self.output_dir / f"{MANIFEST_NAME}.json"

    @property
    def ecsv_path(self) -> Path:
        """The ECSV manifest."""
        return self.output_dir / f"{MANIFEST_NAME}.ecsv"

    def counts(self) -> Counter:
        """
        How many rows have each status.

        Returns
        -------
        collections.Counter
            Status to count.
        """
        return Counter(record.status for record in self.records)

    def write(self) -> None:
        """Write both files (each replaced atomically)."""
        rows = sorted(self.records, key=lambda r: (r.number, r.integrations))
        payload = {"meta": self.meta, "records": [dataclasses.asdict(r) for r in rows]}
        _atomic_write(self.json_path, json.dumps(payload, indent=1, default=str))
        _atomic_write(self.ecsv_path, _ecsv_text(rows, self.meta))


def _ecsv_text(rows: Sequence[TaskRecord], meta: dict) -> str:
    import io

    from astropy.table import Table

    names = [f.name for f in dataclasses.fields(TaskRecord)]
    columns = {name: [getattr(r, name) for r in rows] for name in names}
    # A list does not fit a table cell: outputs are joined with ";".
    columns["outputs"] = [";".join(r.outputs) for r in rows]
    dtypes = {f.name: _column_type(f.type) for f in dataclasses.fields(TaskRecord)}
    table = Table(
        [columns[name] for name in names],
        names=names,
        dtype=[dtypes[name] for name in names],
    )
    table.meta.update({key: value for key, value in meta.items() if key != "parameters"})
    table.meta["parameters"] = json.dumps(meta.get("parameters", {}), default=str)
    for name, unit in (("seconds", "s"), ("peak_memory_mb", "MiB"), ("task_memory_mb", "MiB")):
        table[name].unit = unit
        table[name].info.format = ".3f" if name == "seconds" else ".1f"
    buffer = io.StringIO()
    table.write(buffer, format="ascii.ecsv")
    return buffer.getvalue()


def _column_type(annotation) -> type:
    return {"int": int, "float": float}.get(str(annotation), str)


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def read_manifest(output_dir: str | Path) -> dict[str, list[TaskRecord]]:
    """
    The rows of an earlier batch in this output folder, by input.

    Parameters
    ----------
    output_dir : str or Path
        The folder.

    Returns
    -------
    dict
        Input path to its rows (one, or one per chunk); empty when there is
        no readable manifest.
    """
    path = Path(output_dir) / f"{MANIFEST_NAME}.json"
    try:
        payload = json.loads(path.read_text())
        rows = [TaskRecord(**row) for row in payload["records"]]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    by_input: dict[str, list[TaskRecord]] = {}
    for row in rows:
        by_input.setdefault(row.input, []).append(row)
    return by_input


def summary_line(manifest: Manifest) -> str:
    """
    One line: how many inputs ended how, and the time taken.

    Parameters
    ----------
    manifest : Manifest
        A batch's manifest.

    Returns
    -------
    str
        E.g. ``"8 inputs: 7 done, 1 failed in 12.3 s (manifest: ...)"``.
    """
    counts = manifest.counts()
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s]]
    seconds = manifest.meta.get("seconds")
    timing = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    inputs = len({r.input for r in manifest.records})
    outcome = ", ".join(parts) or "nothing run"
    return f"{inputs} inputs: {outcome}{timing} (manifest: {manifest.ecsv_path})"

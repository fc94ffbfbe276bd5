"""Batch runs on dask.distributed: many exposures or long time series, one machine or a cluster.

- :func:`run_batch` (Python) and ``mirispec-batch`` (shell) run a step,
  pipeline or parameter file over many inputs; one input is one task in a
  worker process, with its own log file next to its products.
- A manifest (ECSV and JSON) records each input's outcome, time and memory;
  ``resume`` skips what an earlier batch finished with the same parameters.
- Time series can be split into integration chunks and stitched back into
  one x1dints identical to a serial run's.

See ``docs/batch.rst``.
"""

from mirispec_steps.batch.manifest import Manifest, read_manifest, summary_line
from mirispec_steps.batch.runner import plan_batch, run_batch
from mirispec_steps.batch.task import TaskRecord

__all__ = ["Manifest", "TaskRecord", "plan_batch", "read_manifest", "run_batch", "summary_line"]

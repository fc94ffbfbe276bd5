"""Regenerate the tutorial's figures: run ``mirispec-demo`` and copy the plots it wrote.

Usage: ``python docs/make_figures.py`` (about 30 s).
"""

import shutil
import tempfile
from pathlib import Path

from mirispec_steps.demo import main

FIGURES = (
    "demo_lrs_box_x1d.png",
    "demo_lrs_optimal_x1d.png",
    "demo_mrs_mrscal.png",
    "demo_mrs_centroid.png",
    "demo_mrs_optimal_x1d.png",
    "demo_mrs_aperture_x1d.png",
    "demo_summary.png",
)

if __name__ == "__main__":
    target = Path(__file__).parent / "figures"
    target.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        main(["--out", folder])
        for name in FIGURES:
            shutil.copy(Path(folder) / name, target / name)
            print(f"updated {target / name}")

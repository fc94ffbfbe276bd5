"""Pure-NumPy/SciPy algorithms of the LRS extractions (no datamodels, no I/O)."""

"""Pure-NumPy/SciPy algorithms of the MRS steps (no datamodels, no I/O)."""

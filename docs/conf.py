"""Sphinx configuration of the mirispec_steps documentation (built with -W in the tests)."""

project = "mirispec_steps"
author = "mirispec_steps developers"
copyright = "2026, mirispec_steps developers"
extensions = ["sphinx.ext.mathjax"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
master_doc = "index"

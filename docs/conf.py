"""Sphinx configuration of the mirispec_steps documentation (built with -W in the tests)."""

project = "mirispec_steps"
author = "mirispec_steps developers"
copyright = "2026, mirispec_steps developers"
# Equations are written as plain-text literal blocks, so the HTML reads offline
# (MathJax would need the web); the API pages come from the docstrings.
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
master_doc = "index"

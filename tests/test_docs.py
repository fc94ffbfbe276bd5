"""The documentation builds with sphinx without a single warning."""

from pathlib import Path

import pytest

sphinx_build = pytest.importorskip("sphinx.cmd.build")


def test_docs_build_without_warnings(tmp_path):
    docs = Path(__file__).resolve().parents[1] / "docs"
    warnings_file = tmp_path / "warnings.txt"
    status = sphinx_build.build_main(
        ["-W", "--keep-going", "-q", "-b", "html", "-w", str(warnings_file), str(docs),
         str(tmp_path / "html")]
    )  # fmt: skip
    assert status == 0, warnings_file.read_text()
    assert (tmp_path / "html" / "jwst_integration.html").is_file()
    assert warnings_file.read_text().strip() == ""

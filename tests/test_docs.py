"""The documentation: builds without a warning, reads offline, and its tutorial code runs."""

import os
import re
from html import unescape
from pathlib import Path

import sphinx.cmd.build as sphinx_build

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    warnings_file = tmp_path / "warnings.txt"
    status = sphinx_build.build_main(
        ["-W", "--keep-going", "-q", "-b", "html", "-w", str(warnings_file), str(DOCS),
         str(tmp_path / "html")]
    )  # fmt: skip
    assert status == 0, warnings_file.read_text()
    html = tmp_path / "html"
    assert warnings_file.read_text().strip() == ""
    for page in ("jwst_integration", "tutorial", "api", "reference_files"):
        assert (html / f"{page}.html").is_file(), page
    # Text as a reader sees it (syntax highlighting splits literal blocks into spans).
    pages = {
        path.name: unescape(re.sub(r"<[^>]+>", "", path.read_text()))
        for path in html.glob("*.html")
    }
    # Nothing needs the web to be read: no MathJax, equations as text.
    assert not [name for name, text in pages.items() if "mathjax" in text.lower()]
    assert "chi2 = sum_p (D_p - S(p))^2 / ERR_p^2" in pages["mrs_centroid.html"]
    # The API page is generated from the docstrings (numpydoc sections rendered).
    assert "Find the source position per spectral bin" in pages["api.html"]
    figures = re.findall(r'src="(_images/[^"]+)"', (html / "tutorial.html").read_text())
    assert len(figures) >= 6
    for figure in figures:
        assert (html / figure).is_file(), figure


def python_blocks(rst: str) -> str:
    """The ``.. code-block:: python`` blocks of an RST page, joined into one script."""
    blocks, lines = [], rst.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == ".. code-block:: python":
            body = []
            for following in lines[index + 2 :]:
                if following and not following.startswith("   "):
                    break
                body.append(following[3:])
            blocks.append("\n".join(body))
    return "\n\n".join(blocks)


def test_tutorial_code_runs_and_finds_the_truth(tmp_path, monkeypatch, capsys):
    script = python_blocks((DOCS / "tutorial.rst").read_text())
    assert "LrsBoxExtractStep.call" in script and "MrsExtractStep.call" in script
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(os.environ, "STPIPE_DISABLE_CRDS_STEPPARS", "true")
    namespace = {}
    exec(compile(script, "tutorial.rst", "exec"), namespace)
    for name in ("lrs_box_x1d.fits", "lrs_optimal_x1d.fits", "lrs_box_x1d.png",
                 "lrs_optimal_x1d.png", "mrs_mrscal.fits", "mrs_mrscal.png",
                 "mrs_centroid.png", "mrs_centroid.ecsv", "mrs_optimal_x1d.fits",
                 "mrs_optimal_x1d.png"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    # The tutorial's own check: the LRS optimal FLUX over the truth, printed.
    printed = capsys.readouterr().out.split()
    (ratio,) = [float(word) for word in printed if re.fullmatch(r"\d\.\d+", word)]
    assert abs(ratio - 1.0) < 0.01
    located = namespace["read_centroid"](namespace["located"])
    assert set(located["band"]) == {"1A", "2A"}
    assert [spec.name for spec in namespace["spectra"].spec] == ["1A", "2A"]

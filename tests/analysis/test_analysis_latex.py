"""LaTeX tables drop into a two-column paper: table* when wide, caption and label, paper names,
and every generated .tex compiles without overfull lines (when pdflatex is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from analysis import tables
from analysis.stats import aggregate
from tests.analysis.frames import runs_frame

PDFLATEX = shutil.which("pdflatex")
DOCUMENT = r"""\documentclass[twocolumn]{article}
\usepackage[T1]{fontenc}
\usepackage{booktabs}
\begin{document}
%s
\end{document}
"""


def _narrow_table() -> str:
    runs = runs_frame({"dense": 20.0, "smoe": 18.0}, val_set="c4")
    return tables.to_latex(tables.summary_table(aggregate(runs), ["c4"]))


def test_latex_tables_drop_in(synth_report):
    texs = sorted(synth_report.out_dir.glob("*.tex"))
    assert len(texs) == 5
    for path in texs:
        tex = path.read_text()
        for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"$\pm$", r"\label{tab:"):
            assert rule in tex, (path.name, rule)
        caption = re.search(r"\\caption\{(.*)\}\n", tex)[1]
        assert not re.match(r"Table \d", caption)  # LaTeX prints "Table N:" itself
        assert "mean $\\pm$ half-width of the 95\\% Student-t CI (df = n$-$1), n = " in caption
        assert "±" not in tex and "−" not in tex
        assert "fine\\_grained" not in tex and "mhmoe-h" not in tex  # paper names, not run ids
    table1 = (synth_report.out_dir / "synth__table1.tex").read_text()
    assert table1.startswith("\\begin{table*}") and "\\multicolumn{3}{c}{paper}" in table1
    assert "Fine-grained SMoE &" in table1 and "n = 3 seeds" in table1
    narrow = _narrow_table()
    assert narrow.startswith("\\begin{table}\n") and "\nDense & 3 &" in narrow


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed (Debian: texlive-latex-base "
                    "texlive-latex-recommended; bin/setup --test installs them)")
def test_every_generated_tex_compiles_in_a_two_column_paper(synth_report, tmp_path):
    bodies = [p.read_text() for p in sorted(synth_report.out_dir.glob("*.tex"))] + [_narrow_table()]
    (tmp_path / "paper.tex").write_text(DOCUMENT % "\n\\clearpage\n".join(bodies))
    run = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
    assert (tmp_path / "paper.pdf").stat().st_size > 5000

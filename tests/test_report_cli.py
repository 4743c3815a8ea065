"""How a report is shown: Markdown and LaTeX blocks, and `cli.py report` (its refusals as one line,
the main tables it prints)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from l2kd.report.render import to_latex, to_markdown

from conftest import REPO
from test_report import synthetic_run


def test_markdown_and_latex_blocks_blanks_and_escapes():
    df = pd.DataFrame({"a_b": [1.25, np.nan], "orders": pd.array([6, pd.NA], dtype="Int64")},
                      index=pd.MultiIndex.from_tuples([("x → y", "m&1"), ("x → y", "m2")], names=["order", "method"]))
    md = to_markdown(df)
    assert md.splitlines()[2] == "| **x → y** | | |"
    assert "| m&1 | 1.2 | 6 |" in md and "| m2 |  |  |" in md
    tex = to_latex(df, "cap_tion")
    assert r"\multicolumn{3}{c}{x $\rightarrow$ y} \\" in tex and r"m\&1 & 1.2 & 6 \\" in tex
    assert r"a\_b" in tex and r"\caption{cap\_tion}" in tex


# --------------------------------------------------------------------------- the command line
def cli(*args):
    env = {**os.environ, "COLUMNS": "200"}  # rich wraps titles at the 80 columns of a pipe
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=env)


@pytest.mark.parametrize("make, fragment", [(lambda p: None, "no such folder"),
                                            (lambda p: p.mkdir(), "no results.json under this folder")])
def test_cli_refuses_an_unknown_or_empty_folder(tmp_path, make, fragment):
    target = tmp_path / "run"
    make(target)
    res = cli("report", str(target))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert not (target / "report").exists()


def test_cli_refuses_a_malformed_result(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text('{"format": "l2kd.trial/1", "R": [')
    res = cli("report", str(tmp_path))
    assert res.returncode == 2 and "a/results.json: unreadable result file" in res.stderr


def test_cli_report_prints_the_main_tables(tmp_path):
    run_dir = synthetic_run(tmp_path)
    res = cli("report", str(run_dir), "--out", str(run_dir / "rep"))
    assert res.returncode == 0, res.stderr
    assert "Table 2's shape" in res.stdout and "Lifelong: STD over orders" in res.stdout
    assert "Single (QA+LM)" in res.stdout and (run_dir / "rep" / "report.md").is_file()

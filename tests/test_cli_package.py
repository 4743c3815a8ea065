"""The command line's shape: cli.py is the parser and `main`, the subcommands live in l2kd/cli/, and
rich is imported there only (the library below prints nothing for people)."""

from __future__ import annotations

import ast

from conftest import REPO

SOFT_CAP = 400  # lines a file; the house rule


def rich_imports(path) -> list[int]:
    """The lines of `path` that import rich (at any depth: lazy imports in functions count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "rich" for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "rich":
            lines.append(node.lineno)
    return lines


def test_cli_py_is_the_parser_and_main_under_250_lines():
    lines = len((REPO / "cli.py").read_text(encoding="utf-8").splitlines())
    assert lines < 250, f"cli.py: {lines} lines; a subcommand's code belongs in l2kd/cli/"
    defined = {n.name for n in ast.parse((REPO / "cli.py").read_text(encoding="utf-8")).body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not {d for d in defined if d.startswith("cmd_")}, defined


def test_rich_is_imported_under_l2kd_cli_only():
    cli_pkg = REPO / "l2kd" / "cli"
    files = [REPO / "cli.py", *(REPO / "l2kd").rglob("*.py"), *(REPO / "tools").rglob("*.py")]
    outside = {str(f.relative_to(REPO)): rich_imports(f) for f in files if cli_pkg not in f.parents}
    assert {f: lines for f, lines in outside.items() if lines} == {}
    assert rich_imports(cli_pkg / "common.py"), "the check found no rich import where one is"


def test_the_cli_package_and_the_tests_keep_under_the_soft_cap():
    files = [*(REPO / "l2kd" / "cli").glob("*.py"), *(REPO / "tests").glob("*.py")]
    over = {str(f.relative_to(REPO)): n for f in files
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > SOFT_CAP}
    assert over == {}

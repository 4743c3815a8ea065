"""House rules checked on the source: nothing outside l2kd/methods/ matches a method's name (the
other house rules: tests/test_house.py).

A method answers structural questions itself (l2kd/methods/catalog.py and the class's properties:
kind, needs_teachers, uses_teacher_logits, stages, the paper's name and figures), so a string equal
to a registered method name must not appear, outside l2kd/methods/, where code decides by it: in a
comparison or membership test (either side, or inside the tuple/list/set tested), as a dict key or
a subscript, in a tuple/list/set of names, or as the name of a method spec being built
(`{"name": ...}`, `name=...`). Elsewhere such a string is another word that happens to be spelled
alike; the few of those are listed in ELSEWHERE with what they mean.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

from l2kd.methods import METHODS

# (file, string): the same spelling with another meaning
ELSEWHERE = {
    ("l2kd/data/__init__.py", "lamol"): "the LAMOL data format (a task's converter)",
    ("l2kd/data/convert/classification.py", "lamol"): "a LAMOL json file as a conversion source",
}


def _strings(node: ast.AST) -> list[ast.Constant]:
    """String constants of `node` itself or of the tuple/list/set display it is."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [c for e in node.elts for c in _strings(e)]
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    return []


def deciding_strings(tree: ast.AST) -> list[ast.Constant]:
    """String constants in the places where code decides by a name (see the module's doc)."""
    out: list[ast.Constant] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                out += _strings(side)
        elif isinstance(node, ast.Dict):
            out += [c for k in node.keys if k is not None for c in _strings(k)]
            out += [c for k, v in zip(node.keys, node.values)
                    if isinstance(k, ast.Constant) and k.value == "name" for c in _strings(v)]
        elif isinstance(node, ast.Subscript):
            out += _strings(node.slice)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            out += [e for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        elif isinstance(node, ast.keyword) and node.arg == "name":
            out += _strings(node.value)
    return out


def method_name_matches(root: Path = REPO) -> list[str]:
    names = set(METHODS)
    files = [root / "cli.py", *sorted((root / "l2kd").rglob("*.py"))]
    found = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel.startswith("l2kd/methods/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), rel)
        for c in deciding_strings(tree):
            if c.value in names and (rel, c.value) not in ELSEWHERE:
                found.append(f"{rel}:{c.lineno}: {c.value!r}")
    return sorted(set(found))


def test_no_method_name_is_matched_outside_the_methods_package():
    found = method_name_matches()
    assert not found, "ask the method (l2kd/methods/catalog.py, the class's properties):\n" + "\n".join(found)


def test_the_check_sees_each_way_of_matching_a_name():
    cases = ['x == "lamol"', '"single" != m', 'm in ("word_kd", "seq_kd")', '{"finetune": 1}', 'd["gem"]',
             'M = ["ewc", "mas"]', 'f(name="lamol" if a else "finetune")', 'spec = {"name": "single"}']
    for src in cases:
        assert {c.value for c in deciding_strings(ast.parse(src))} & set(METHODS), src
    # a name passed as data (a seed label, a message) decides nothing
    assert not deciding_strings(ast.parse('seed("seq_kd", t); log.info("lamol")'))


def test_every_registered_method_has_its_facts_and_the_class_answers_from_them():
    from l2kd.methods import FACTS, kd_methods, method_class

    assert set(FACTS) == set(METHODS)
    for name in METHODS:
        cls = method_class(name)
        assert (cls.kind(), cls.display_name(), cls.needs_teachers()) == \
            (FACTS[name].kind, FACTS[name].display_name, FACTS[name].teachers)
    assert all(method_class(m).needs_teachers() for m in kd_methods())


def test_the_report_asks_the_methods_without_importing_torch():
    import subprocess
    import sys

    code = "import sys, l2kd.report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0

"""The house rules, checked on the source (README, "Layout"): no import circles between l2kd's
modules; Ray, DeepSpeed and rich each in their one home (rich under l2kd/cli/ only: the library
prints nothing for people); what identifies a trial defined in one module; no file over 400 lines;
cli.py the parser and `main` under 250 lines. Reads files only: fast, no imports of the code. The
method-name rule has its own file (tests/test_method_names.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "l2kd"
MAX_LINES = 400
MAX_CLI_LINES = 250
# the one module that may import each heavy or presentation library (l2kd/cli/ is a package: rich's home)
HOMES = {"ray": ("l2kd/grid.py",), "deepspeed": ("l2kd/engine.py",), "rich": ("l2kd/cli/",)}
IDENTITY_HOME = "l2kd/identity.py"
IDENTITY_FUNCTIONS = ("config_hash", "trial_identity", "settings_diff", "teacher_key")


def sources() -> list[Path]:
    return sorted([REPO / "cli.py", *PACKAGE.rglob("*.py"), *(REPO / "tools").rglob("*.py")])


def rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def module_name(p: Path) -> str:
    parts = list(p.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(p: Path) -> set[str]:
    """Modules `p` imports anywhere (a deferred import inside a function is a dependency too; only
    `if TYPE_CHECKING:` blocks are not), absolute names, relative imports resolved."""
    tree = ast.parse(p.read_text(), str(p))
    pkg = module_name(p) if p.name == "__init__.py" else module_name(p).rpartition(".")[0]
    skipped = {id(n) for stmt in ast.walk(tree) if _type_checking(stmt) for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names}  # `from . import x` may name a module
            out.update(subs)
            if not all(s in MODULES for s in subs):  # names taken from `base` itself
                out.add(base)
    return out




MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}  # l2kd's module names


def _type_checking(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)


def test_no_import_circles_between_l2kd_modules():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: sorted(i for i in imported(p) if i in files and i != m)
             for m, p in files.items()}
    for m in list(graph):  # importing a.b.c runs a and a.b first
        parents = {".".join(x.split(".")[:k]) for x in graph[m] for k in range(2, len(x.split(".")))}
        own = {".".join(m.split(".")[:k]) for k in range(1, len(m.split(".")))}  # m's packages run first anyway
        graph[m] = sorted(({*graph[m], *(parents & files.keys())} - own) - {m})
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            raise AssertionError("import circle: " + " -> ".join(cycle))


def test_ray_deepspeed_and_rich_each_live_in_their_one_home():
    wrong = []
    for p in sources():
        names = {i.split(".")[0] for i in imported(p)}
        for lib, homes in HOMES.items():
            if lib != "rich" and rel(p).startswith("tools/"):  # measurement scripts may drive Ray directly
                continue
            if lib in names and not any(rel(p) == h or (h.endswith("/") and rel(p).startswith(h)) for h in homes):
                wrong.append(f"{rel(p)} imports {lib}")
    assert not wrong, wrong
    assert "rich" in {i.split(".")[0] for i in imported(PACKAGE / "cli" / "common.py")}, "the check sees no rich"


def test_one_module_defines_what_identifies_a_trial():
    defined: dict[str, list[str]] = {}
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in IDENTITY_FUNCTIONS:
                defined.setdefault(node.name, []).append(rel(p))
    assert defined, "no identity function found"
    assert all(where == [IDENTITY_HOME] for where in defined.values()), defined


def test_no_file_over_400_lines_and_cli_py_is_the_parser_and_main():
    files = [*sources(), *(REPO / "tests").glob("*.py")]
    long = {rel(p): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
    text = (REPO / "cli.py").read_text()
    assert len(text.splitlines()) < MAX_CLI_LINES, "a subcommand's code belongs in l2kd/cli/"
    commands = {n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name.startswith("cmd_")}
    assert not commands, commands

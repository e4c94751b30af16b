"""The package's layout is its architecture: imports run one way, from the entry points down to
data and models, with no circle and no private name taken across modules.

Read from the code's own import statements (``ast``), so the test fails on the commit that adds
an arrow back up, wherever in a function it hides."""
import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "difformer"

# Floors, top to bottom; a module may import from its own floor or any floor below it.
FLOORS = {
    "difformer.__main__": 7, "difformer.cli": 7, "difformer.worker": 7,
    "difformer.invocation": 6,
    "difformer.modes": 5,
    "difformer.train": 4, "difformer.reproduction": 4, "difformer.sweeps": 4,
    "difformer.runs": 3, "difformer.config": 3,
    "difformer.data": 1, "difformer.models": 1,
    "difformer.system": 0, "difformer": 0,  # the package itself: __version__ only
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    for prefix in sorted(FLOORS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return FLOORS[prefix]
    raise AssertionError(f"{module} is on no floor: add its folder to FLOORS")


def imports() -> list[tuple[str, str, list[str], int]]:
    """(importer, imported module, names, line) for every package-internal import."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    out = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("difformer"):
                    continue
                for alias in node.names:  # ``from . import submodule`` imports the submodule
                    sub = f"{target}.{alias.name}"
                    if sub in modules:
                        out.append((name, sub, [], node.lineno))
                    else:
                        out.append((name, target, [alias.name], node.lineno))
            elif isinstance(node, ast.Import):
                out.extend((name, a.name, [], node.lineno) for a in node.names
                           if a.name.startswith("difformer"))
    return out


def test_every_module_is_on_a_floor():
    for path in PACKAGE.rglob("*.py"):
        floor(module_name(path))


def test_no_import_runs_up_a_floor():
    upward = [f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)}), line {line}"
              for a, b, _, line in imports() if floor(b) > floor(a)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in imports():
        if a != b and not a.startswith(b + "."):  # a package's own __init__ is not a circle
            graph.setdefault(a, set()).add(b)
    circles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(circles)


def test_no_private_name_is_imported_across_modules():
    private = [f"{a} imports {n} from {b}, line {line}" for a, b, names, line in imports()
               for n in names if n.startswith("_") and not n.startswith("__")]
    assert not private, "\n".join(private)


def test_every_task_kind_defines_what_the_run_loop_asks():
    """A task kind is one class and one registration line: this lists what it must define."""
    from difformer.data.registry import DATASETS
    from difformer.train.tasks import TASKS
    from difformer.train.tasks.base import Task

    required = ("kind", "level", "trainers", "auto_trainer", "unused_trainer_keys")
    for kind, cls in TASKS.items():
        assert issubclass(cls, Task) and cls.kind == kind
        assert not getattr(cls, "__abstractmethods__", None), (kind, cls.__abstractmethods__)
        for name in required:
            assert hasattr(cls, name), f"task kind {kind} lacks {name}"
        preset, defaults = cls.auto_trainer
        assert preset in cls.trainers and isinstance(defaults, dict)
        assert (REPO / "configs" / "trainer" / f"{preset}.yaml").is_file()
    assert {spec.kind for spec in DATASETS.values()} <= set(TASKS)


def test_a_kind_missing_a_method_cannot_be_built():
    from difformer.train.tasks.base import Task

    class Incomplete(Task):
        kind = "incomplete"

    try:
        Incomplete(None, None, None, None)
    except TypeError as err:
        assert "epoch_runner" in str(err) and "evaluate" in str(err)
    else:
        raise AssertionError("a task kind without epoch_runner/evaluate was built")


def test_the_datasets_page_is_generated_from_the_registry():
    from difformer.data.registry import markdown_table

    page = (REPO / "docs" / "datasets.md").read_text()
    assert page.endswith(markdown_table()), "run python scripts/datasets_table.py"


def test_the_command_line_imports_no_graph_library_before_the_data():
    """Start-up time: PyG (and the torch._dynamo it imports) comes with a dataset that has a
    graph, so a bad input is refused without it."""
    import subprocess
    import sys

    code = ("import sys, difformer.invocation; "
            "print(sorted(m for m in ('torch_geometric', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert out == "[]"

"""The layout's rules, checked on the source: which layer may import which
(docs/architecture.md draws the same picture), label math on torch alone,
and functions short enough to read."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sklearn_npll"

# Each module of the package belongs to the group of its longest prefix; a
# group may import itself and the groups listed. Bottom to top: the runtime
# policy and digest; data and networks; the estimator base (and the
# callbacks it builds); the methods' trainers; the public modules.
ALLOWED = {
    "_runtime": set(),
    "_digest": set(),
    "_data": {"_runtime", "_digest"},
    "_nn": {"_runtime"},
    "metrics": {"_data"},
    "model_selection": {"_data"},
    "callbacks": {"_digest", "_estimator.skorch_compat"},
    "_estimator": {"_runtime", "_digest", "_data", "_nn", "callbacks", "metrics"},
    "_methods": {"_runtime", "_data", "_nn", "_estimator", "_methods.label_math"},
    "_methods.label_math": set(),
    "_vlm": {"_runtime", "_digest", "_data"},
    "annotate": {"_runtime", "_digest", "_data", "_vlm", "datasets"},
    "datasets": {"_data"},
    "distributed": {"_vlm", "_data"},
    "export": {"_runtime", "_data", "_nn", "_estimator"},
    "coreg": {"_runtime", "_data", "_nn", "_estimator", "_methods"},
    "baselines": {"_runtime", "_data", "_nn", "_estimator", "_methods"},
    "_io_codec": {"_nn"},
    "io": {"_runtime", "_estimator", "_io_codec", "annotate"},
    "_report": {"_data", "annotate"},
    "report": {"_report"},
    # the command-line program uses the public modules and the lower layers
    "_cli": {"_runtime", "_digest", "_data", "_nn", "annotate", "coreg", "callbacks", "io",
             "export", "report"},
    "cli": {"_cli"},
    "__main__": {"cli"},
    "__init__": None,  # the package's face re-exports everything
}
# What the label math may import at all.
LABEL_MATH_IMPORTS = {"math", "numpy", "torch", "warnings"}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def group_of(name):
    candidates = [g for g in ALLOWED if name == g or name.startswith(g + ".")]
    return max(candidates, key=len) if candidates else None


def package_imports(name, path):
    """(imported module within the package, line) of every import in ``path``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{a.name}" if target else a.name for a in node.names]
                # "from . import x" imports a module; "from .x import y" a name of x
                yield (names[0] if node.module is None else target), node.lineno
            elif node.module and node.module.startswith("sklearn_npll"):
                yield node.module[len("sklearn_npll."):], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sklearn_npll."):
                    yield alias.name[len("sklearn_npll."):], node.lineno


def test_every_module_has_a_group():
    assert [name for name, _ in modules() if group_of(name) is None] == []


@pytest.mark.parametrize("name, path", list(modules()), ids=[n for n, _ in modules()])
def test_imports_flow_one_way(name, path):
    group = group_of(name)
    allowed = ALLOWED[group]
    if allowed is None:
        return
    wrong = []
    for target, line in package_imports(name, path):
        target_group = group_of(target)
        if target_group is None or target_group == group:
            continue
        if not any(target_group == a or target_group.startswith(a + ".")
                   or target == a or target.startswith(a + ".") for a in allowed):
            wrong.append(f"line {line}: {target}")
    assert wrong == [], f"{name} ({group}) may import only {sorted(allowed)}"


def test_label_math_imports_torch_and_numpy_only():
    path = PACKAGE / "_methods" / "label_math.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." if node.level else node.module.split(".")[0])
    assert imported <= LABEL_MATH_IMPORTS


def test_the_vlm_side_never_imports_the_classifiers():
    for name, path in modules():
        if group_of(name) in ("_vlm", "annotate"):
            targets = {t for t, _ in package_imports(name, path)}
            assert not {t for t in targets
                        if t.split(".")[0] in ("coreg", "baselines", "_estimator", "_methods")}


def _code_lines(node):
    """Lines of a function less its docstring (numpydoc docstrings of public
    functions are long by design)."""
    length = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
            and isinstance(first.value.value, str):
        length -= first.end_lineno - first.lineno + 1
    return length


def test_functions_fit_on_a_screen():
    """No function or method over 80 lines of code, except constructors,
    which only list and assign their parameters."""
    long = []
    for name, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.name != "__init__" and _code_lines(node) > 80:
                long.append(f"{name}.{node.name}: {_code_lines(node)} lines")
    assert long == []


def test_the_estimator_base_reads_alone():
    """The base class stays a contract a reader holds in their head (it was
    1,382 lines before it was split by concern)."""
    assert len((PACKAGE / "_estimator" / "base.py").read_text().splitlines()) <= 520

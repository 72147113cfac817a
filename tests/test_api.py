"""Every public module says what it exports: ``__all__`` lists exactly its public names."""

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxprune"
MODULES = sorted(
    ".".join(("jaxprune", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
    for p in ROOT.rglob("*.py")
    if not p.name.startswith("_") or p.name == "__init__.py"
)
NOT_EXPORTED = {"log", "T"}  # a module's logger and type variables


def defined_names(module: str) -> set[str]:
    """Public top-level functions, classes and assignments of the module's source."""
    path = ROOT.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") and n not in NOT_EXPORTED}


@pytest.mark.parametrize("module", MODULES)
def test_public_module_declares_all(module):
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{module} declares no __all__"
    missing = [n for n in exported if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it lacks: {missing}"
    unlisted = sorted(defined_names(module) - set(exported))
    assert not unlisted, f"{module} defines public names outside __all__: {unlisted}"

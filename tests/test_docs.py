"""Fast checks of the documentation sources (no Sphinx build; that runs in ``docs/build.sh``).

* every module listed in the API reference (``docs/api.rst``) exists and declares ``__all__``;
* every public subpackage/module of :mod:`manifold_ps` is listed there;
* every public name (everything in a listed module's ``__all__``) has a docstring of its own:
  classes and functions their ``__doc__``, constants a string literal right after their
  assignment (the form autodoc reads);
* every public callable that takes or returns tensors states shapes in its docstring;
* the tutorials are sphinx-gallery scripts with a title.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import manifold_ps

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_RST = DOCS / "api.rst"

# Modules of manifold_ps that are deliberately not part of the API reference.
NOT_IN_API = {"manifold_ps.cli"}


def _api_modules() -> list[str]:
    """Module names listed in the autosummary directive of ``docs/api.rst``."""
    text = API_RST.read_text(encoding="utf-8")
    return re.findall(r"^\s{3}(manifold_ps(?:\.\w+)+)\s*$", text, flags=re.MULTILINE)


API_MODULES = _api_modules()


def _public_top_level() -> list[str]:
    return sorted(
        f"manifold_ps.{m.name}" for m in pkgutil.iter_modules(manifold_ps.__path__) if not m.name.startswith("_")
    )


def _has_own_doc(obj: object) -> bool:
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__")
    else:
        doc = getattr(obj, "__doc__", None)
    return bool(doc and doc.strip())


def _submodules(module: ModuleType) -> list[ModuleType]:
    mods = [module]
    if hasattr(module, "__path__"):
        for info in pkgutil.iter_modules(module.__path__):
            mods.append(importlib.import_module(f"{module.__name__}.{info.name}"))
    return mods


def _attribute_docs(module: ModuleType) -> dict[str, str]:
    """``name -> docstring`` of module-level assignments followed by a string literal."""
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return {}
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    docs: dict[str, str] = {}
    body = tree.body
    for node, nxt in zip(body, body[1:]):
        if not (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            continue
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name) and nxt.value.value.strip():
                docs[target.id] = nxt.value.value
    return docs


def _constant_documented(module: ModuleType, name: str) -> bool:
    value = getattr(module, name)
    for sub in _submodules(module):
        if name in _attribute_docs(sub) and getattr(sub, name, object()) is value:
            return True
    return False


def _public_names(module_name: str) -> list[tuple[str, str]]:
    module = importlib.import_module(module_name)
    return [(module_name, name) for name in getattr(module, "__all__", [])]


def test_api_page_lists_modules() -> None:
    assert API_MODULES, f"no module found in the autosummary list of {API_RST}"
    assert len(API_MODULES) == len(set(API_MODULES)), "a module is listed twice in docs/api.rst"


@pytest.mark.parametrize("module_name", API_MODULES)
def test_api_module_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} declares no __all__"
    assert _has_own_doc(module), f"{module_name} has no module docstring"


@pytest.mark.parametrize("module_name", [m for m in _public_top_level() if m not in NOT_IN_API])
def test_every_public_module_in_api(module_name: str) -> None:
    assert module_name in API_MODULES, f"{module_name} is public but not listed in docs/api.rst"


def _all_public_names() -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    for module_name in API_MODULES:
        try:
            names += _public_names(module_name)
        except ImportError:
            continue  # reported by test_api_module_exists
    return names


@pytest.mark.parametrize(("module_name", "name"), _all_public_names())
def test_public_name_documented(module_name: str, name: str) -> None:
    module = importlib.import_module(module_name)
    assert hasattr(module, name), f"{module_name}.__all__ lists {name!r}, which does not exist"
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        assert _has_own_doc(obj), f"{module_name}.{name} has no docstring"
    elif isinstance(obj, ModuleType):
        assert _has_own_doc(obj), f"{module_name}.{name} (a module) has no docstring"
    else:
        assert _constant_documented(module, name), (
            f"{module_name}.{name} is a public constant without a docstring: put a string literal "
            "on the line after its assignment where it is defined"
        )


_TENSOR = re.compile(r"\bTensor\b")
_SHAPE = re.compile(r"\(\s*(?:[A-Za-z_]\w*|\d+|\.\.\.)\s*(?:[,*+]|\))")


def _callables_with_tensors() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for module_name, name in _all_public_names():
        obj = getattr(importlib.import_module(module_name), name, None)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        target = obj.__init__ if inspect.isclass(obj) else obj
        try:
            annotations = str(inspect.signature(target))
        except (TypeError, ValueError):
            continue
        text = annotations
        if inspect.isclass(obj):  # a class counts when any of its public methods handles tensors
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    try:
                        text += str(inspect.signature(member))
                    except (TypeError, ValueError):
                        pass
        if _TENSOR.search(text):
            out.append((module_name, name))
    return out


@pytest.mark.parametrize(("module_name", "name"), _callables_with_tensors())
def test_tensor_shapes_stated(module_name: str, name: str) -> None:
    obj = getattr(importlib.import_module(module_name), name)
    docs = [inspect.getdoc(obj) or ""]
    if inspect.isclass(obj):
        docs += [inspect.getdoc(m) or "" for a, m in vars(obj).items() if inspect.isfunction(m) and not a.startswith("_")]
    text = "\n".join(docs)
    assert "Shape" in text or _SHAPE.search(text), (
        f"{module_name}.{name} handles tensors but its docstring states no shape "
        "(add a 'Shapes:' section, e.g. 'x: (B, C, V)')"
    )


TUTORIALS = sorted((DOCS / "tutorials").glob("plot_*.py"))


def test_tutorials_present() -> None:
    assert (DOCS / "tutorials" / "README.txt").is_file()
    assert len(TUTORIALS) >= 7, [p.name for p in TUTORIALS]


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_is_gallery_script(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree, clean=False)
    assert doc, f"{path.name} must start with a docstring holding its title"
    lines = [line for line in doc.strip().splitlines()]
    assert len(lines) >= 2 and set(lines[1].strip()) <= set("=-~^") and len(lines[1].strip()) >= len(lines[0].strip()), (
        f"{path.name}: the docstring must start with an underlined title"
    )


def _results_helper() -> ModuleType:
    """``docs/_results.py``, the results page's generator (not part of the package)."""
    spec = importlib.util.spec_from_file_location("_results", DOCS / "_results.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_results_page_shows_committed_calibration_plots(tmp_path: Path) -> None:
    helper = _results_helper()
    results = tmp_path / "benchmarks" / "results"
    (results / "figures").mkdir(parents=True)
    (results / "run1" / "figures" / "inpainting").mkdir(parents=True)
    for stem in ("bunny_mnist-cpu", "era5_imputation-cpu", "flow_ablation-bunny_mnist-cpu"):
        (results / f"{stem}.md").write_text(f"# {stem}\n\n| a | b |\n|---|---:|\n| x | 1 |\n", encoding="utf-8")
    (results / "run1" / "results.md").write_text("# run1\n", encoding="utf-8")
    (results / "figures" / "bunny_mnist-cpu-calibration.png").write_bytes(b"bunny")
    (results / "figures" / "bunny_mnist-cpu-aps.png").write_bytes(b"not a calibration plot")
    (results / "run1" / "figures" / "inpainting" / "calibration.png").write_bytes(b"run")
    page = helper.write_results_page(tmp_path, tmp_path / "_generated").read_text(encoding="utf-8")
    sections = dict(zip(["bunny", "era5", "ablation", "run"], page.split("*Source:*")))
    assert ".. image:: /_generated/results_figures/bunny_mnist-cpu-calibration.png" in sections["bunny"]
    assert ".. image:: /_generated/results_figures/run1-inpainting-calibration.png" in sections["run"]
    assert "Calibration" not in sections["era5"] and "Calibration" not in sections["ablation"]
    assert "aps.png" not in page
    copied = tmp_path / "_generated" / "results_figures"
    assert (copied / "bunny_mnist-cpu-calibration.png").read_bytes() == b"bunny"
    assert (copied / "run1-inpainting-calibration.png").read_bytes() == b"run"

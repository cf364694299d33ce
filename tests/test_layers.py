"""brainsim reaches brainsim.kernels only through the names the kernels export.

``lint-imports`` (contracts in ``pyproject.toml``) checks imports between modules; it cannot see
*names*: ``from .kernels import _helper`` or ``kernels._procedural.Rule`` import only the
package ``brainsim.kernels``. This test reads every module of brainsim (kernels/ aside) and
checks each name it takes from the kernels, imported or read as ``kernels.<name>``, against
``brainsim.kernels.__all__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import brainsim
from brainsim import kernels

PACKAGE = Path(brainsim.__file__).parent
KERNELS = Path(kernels.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: None if is_package else -1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def kernel_names_used(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, name)`` of every name ``source`` takes from ``brainsim.kernels``: names imported
    from it (or from a submodule: the submodule's name), and attributes read off a local name
    bound to the package."""
    used, aliases = [], set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            origin = _absolute(node, module, is_package)
            for alias in node.names:
                if origin == "brainsim" and alias.name == "kernels":
                    aliases.add(alias.asname or "kernels")
                elif origin == "brainsim.kernels":
                    used.append((node.lineno, alias.name))
                elif origin.startswith("brainsim.kernels."):
                    used.append((node.lineno, origin.split(".")[2]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("brainsim.kernels."):
                    used.append((node.lineno, alias.name.split(".")[2]))
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            used.append((node.lineno, node.attr))
    return used


def test_the_checker_sees_private_names():
    """The ways around the public surface that import-linter cannot see are found."""
    source = (
        "from . import kernels\n"
        "from .kernels import fast_sum, _helper\n"
        "from .kernels._procedural import Rule\n"
        "x = kernels._procedural.Rule\n"
        "y = kernels.ell_deliver\n"
    )
    used = kernel_names_used(source, "brainsim.connect", is_package=False)
    assert sorted(used) == [
        (2, "_helper"), (2, "fast_sum"), (3, "_procedural"), (4, "_procedural"),
        (5, "ell_deliver"),
    ]  # fmt: skip
    nested = kernel_names_used("from ..kernels import _x\n", "brainsim.fit._driver", False)
    assert nested == [(1, "_x")]


def test_exports_are_the_public_names():
    public = {name for name in vars(kernels) if not name.startswith("_")}
    modules = {name for name in public if isinstance(getattr(kernels, name), type(ast))}
    assert set(kernels.__all__) == public - modules
    assert not [name for name in kernels.__all__ if name.startswith("_")]


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py")) if KERNELS not in p.parents],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_brainsim_uses_only_exported_kernel_names(path):
    used = kernel_names_used(path.read_text(), _module(path), path.name == "__init__.py")
    private = [f"line {line}: {name}" for line, name in used if name not in kernels.__all__]
    assert not private, (
        f"{path.relative_to(PACKAGE)} uses names brainsim.kernels does not export: {private}. "
        "Export them from kernels/__init__.py (without a leading underscore) and use that name."
    )

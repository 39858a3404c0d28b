"""The import direction: core → schemas → models → sinks → streams → the command line.

Every import statement of the project's packages (lazy ones inside functions too) is read with
:mod:`ast`; a package may import only the floors below it. ``m1`` is the command line: only it
and the packages' own ``cli.py`` modules may import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What each lower floor may import from this project (itself included).
ALLOWED = {
    "core": {"core"},
    "schemas": {"core", "schemas"},
    "models": {"core", "schemas", "models"},
    "sinks": {"core", "schemas", "sinks"},
}
PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")


def project_imports(path: Path) -> list[str]:
    """The dotted names of this project's modules that ``path`` imports."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [name for name in names if name.split(".")[0] in PACKAGES]


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_lower_floors_import_only_below(package: str) -> None:
    wrong = [f"{path.relative_to(ROOT)} imports {name}"
             for path in modules_of(package) for name in project_imports(path)
             if name.split(".")[0] not in ALLOWED[package]]
    assert not wrong, "\n".join(wrong)


def test_only_the_command_line_imports_m1() -> None:
    wrong = [f"{path.relative_to(ROOT)} imports {name}"
             for package in PACKAGES if package != "m1"
             for path in modules_of(package) if path.name != "cli.py"
             for name in project_imports(path) if name.split(".")[0] == "m1"]
    assert not wrong, "\n".join(wrong)


def test_streams_do_not_import_command_modules() -> None:
    wrong = [f"{path.relative_to(ROOT)} imports {name}"
             for path in modules_of("streams") for name in project_imports(path)
             if name.split(".")[0] == "m1" or name.endswith(".cli")]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from models.bank import ModelBank\n")
    assert project_imports(module) == ["models.bank"]

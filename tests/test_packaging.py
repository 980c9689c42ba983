"""Packaging conventions every packages/*/pyproject.toml follows (docs/packaging.md).

Static checks of the metadata plus the installed versions; the install-each-package-alone check that
needs the registry is `make check-dist` (tools/check_dist.py), whose dependency policy is tested here.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))
SIBLING_NAMES = {p.name for p in PACKAGE_DIRS}


def _load_check_dist():
    spec = importlib.util.spec_from_file_location("_check_dist", ROOT / "tools" / "check_dist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_dist = _load_check_dist()


def _project(pdir: Path) -> dict:
    return tomllib.loads((pdir / "pyproject.toml").read_text(encoding="utf-8"))


def _module(pdir: Path) -> str:
    return check_dist.import_name(pdir)


def _static_version(pdir: Path) -> str:
    """The package's version at its source: the static ``[project].version`` of a Flower App (ws-fed:
    ``flwr run`` needs it there), else the string literal assigned to __version__ in its _version.py
    (what setuptools reads; ``make install`` re-runs when that file changes)."""
    static = _project(pdir)["project"].get("version")
    if static is not None:
        return static
    init = pdir / "src" / _module(pdir) / "_version.py"
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
            raise AssertionError(f"{init}: __version__ must be a string literal, got {ast.unparse(node.value)}")
    raise AssertionError(f"{init}: no __version__ assignment")


def _sibling_requirements(project: dict) -> list[Requirement]:
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return [r for r in map(Requirement, reqs) if r.name in SIBLING_NAMES]


def test_every_package_found():
    assert {p.name for p in PACKAGE_DIRS} >= {"ws-core", "ws-train", "ws-serve", "weightshare"}, PACKAGE_DIRS


def test_one_requires_python_matching_readme():
    floors = {p.name: _project(p)["project"].get("requires-python") for p in PACKAGE_DIRS}
    assert len(set(floors.values())) == 1, f"allowed one requires-python for all packages, got {floors}"
    spec = SpecifierSet(next(iter(floors.values())))
    match = re.fullmatch(r">=\s*(3\.\d+)", str(spec))
    assert match, f"allowed a plain '>=3.X' floor, got {spec}"
    floor = match.group(1)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"({floor} or newer)" in readme, f"README.md must state the floor as '({floor} or newer)'"
    assert Version("{}.{}".format(*sys.version_info[:2])) in spec, f"running Python {sys.version} outside {spec}"


def test_sibling_requirements_use_one_range_that_holds_the_current_versions():
    specs = {}
    for pdir in PACKAGE_DIRS:
        for req in _sibling_requirements(_project(pdir)["project"]):
            specs[f"{pdir.name} -> {req.name}"] = str(req.specifier)
            assert str(req.specifier), f"{pdir.name}: {req.name} needs a version range, got none"
            current = _static_version(ROOT / "packages" / req.name)
            assert req.specifier.contains(current), f"{pdir.name}: {req} excludes {req.name} {current}"
    assert any(k.split(" -> ")[1].startswith("ws-core") for k in specs), "no package depends on ws-core?"
    assert len(set(specs.values())) == 1, f"allowed one range for siblings, got {specs}"


@pytest.mark.parametrize("pdir", PACKAGE_DIRS, ids=lambda p: p.name)
def test_build_system_license_and_typing(pdir: Path):
    data = _project(pdir)
    project, setuptools = data["project"], data["tool"]["setuptools"]
    (backend_req,) = [Requirement(r) for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    # the license = "<SPDX>" string form and license-files need setuptools 77
    assert "76.9" not in backend_req.specifier and "77.0" in backend_req.specifier, (
        f"allowed setuptools>=77 in build-system.requires, got {backend_req}"
    )
    assert project.get("license") == "Apache-2.0", f"allowed license 'Apache-2.0', got {project.get('license')!r}"
    assert project.get("license-files") == ["LICENSE"], f"allowed ['LICENSE'], got {project.get('license-files')}"
    license_file = pdir / "LICENSE"
    assert license_file.is_file(), f"{license_file} missing (a link to the repository's LICENSE)"
    assert license_file.read_bytes() == (ROOT / "LICENSE").read_bytes(), f"{license_file} differs from LICENSE"
    module = _module(pdir)
    assert (pdir / "src" / module / "py.typed").is_file(), f"{pdir.name}: src/{module}/py.typed missing"
    assert "py.typed" in setuptools.get("package-data", {}).get(module, []), (
        f"{pdir.name}: py.typed must be listed in [tool.setuptools.package-data] {module}"
    )


def test_root_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text, "LICENSE is not the Apache-2.0 text"
    assert "END OF TERMS AND CONDITIONS" in text, "LICENSE is not the full Apache-2.0 text"


@pytest.mark.parametrize("pdir", PACKAGE_DIRS, ids=lambda p: p.name)
def test_version_single_sourced(pdir: Path):
    project, module = _project(pdir), _module(pdir)
    if "version" in project["project"]:  # only a Flower App keeps it static; __version__ then reads the metadata
        assert "flwr" in project.get("tool", {}), f"{pdir.name}: version must be dynamic, got a static one"
        assert "version" not in project["project"].get("dynamic", []), f"{pdir.name}: version both static and dynamic"
    else:
        assert "version" in project["project"].get("dynamic", []), f"{pdir.name}: 'version' missing from dynamic"
        attr = project["tool"]["setuptools"]["dynamic"]["version"]
        allowed = {"attr": f"{module}._version.__version__"}
        assert attr == allowed, f"allowed {{attr = '{module}._version.__version__'}}, got {attr}"
    source = _static_version(pdir)
    installed = importlib.metadata.version(project["project"]["name"])
    imported = importlib.import_module(module).__version__
    assert imported == source, f"{module}.__version__ is {imported!r} at run time, {source!r} in its source"
    assert installed == source, (
        f"{module}.__version__ is {source!r} but the installed metadata says {installed!r}: "
        f"reinstall (.venv/bin/pip install --no-deps -e packages/{pdir.name})"
    )


def test_check_dist_policy_covers_every_package():
    assert set(check_dist.SIBLINGS) == SIBLING_NAMES, (
        f"tools/check_dist.py SIBLINGS must list every package: allowed {sorted(SIBLING_NAMES)}, "
        f"got {sorted(check_dist.SIBLINGS)}"
    )
    core = check_dist.forbidden("ws-core")
    assert {"lightning", "flwr", "fastapi", "ray", "brevitas"} <= core
    assert SIBLING_NAMES - {"ws-core"} <= core
    assert check_dist.forbidden("weightshare").isdisjoint({"ws-core", "ws-train", "ws-serve", "lightning"})
    assert "flwr" not in check_dist.forbidden("ws-fed") and "flwr" in check_dist.forbidden("ws-serve")


@pytest.mark.parametrize("pdir", PACKAGE_DIRS, ids=lambda p: p.name)
def test_no_forbidden_direct_dependency(pdir: Path):
    """The declared (non-extra) dependencies already respect the policy `make check-dist` checks in full."""
    declared = {check_dist.canonical(Requirement(r).name) for r in _project(pdir)["project"].get("dependencies", [])}
    bad = sorted(declared & check_dist.forbidden(pdir.name))
    assert not bad, f"{pdir.name} declares dependencies it must not pull in: {bad}"


def test_check_dist_rejects_unknown_packages():
    with pytest.raises(SystemExit, match=r"allowed: .*ws-core"):
        check_dist.package_dirs(["ws-nope"])


def test_check_dist_names_who_declares_a_forbidden_dependency():
    report = {"install": [
        {"metadata": {"name": "ws_core", "requires_dist": ["torch>=2.4", "Flwr>=1.41; extra == 'fed'"]}},
        {"metadata": {"name": "timm", "requires_dist": ["torch", "ray; extra == 'Dist'"]},
         "requested_extras": ["dist"]},
    ]}
    assert check_dist._declared_by(report, "torch") == ["timm", "ws-core"]
    assert check_dist._declared_by(report, "flwr") == [], "an extra nobody requested declares nothing"
    assert check_dist._declared_by(report, "ray") == ["timm"], "a requested extra counts"
    assert check_dist._declared_by(report, "lightning") == []

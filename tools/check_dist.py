#!/usr/bin/env python3
"""The wheelhouse: build every package into dist/, then check each one installs alone from it.

    python tools/check_dist.py build [--outdir dist] [PACKAGE ...]      # make dist
    python tools/check_dist.py check [--wheelhouse dist] [PACKAGE ...]  # make check-dist

``build`` copies each packages/<name>/ to a temporary folder (the LICENSE link becomes a file) and runs
``python -m build`` there: an sdist, then a wheel built from that sdist, so the sdist is known to be
complete and no build/ or *.egg-info is left in the source tree.

``check`` creates a fresh virtual environment per package, installs that package's wheel with
``--find-links <wheelhouse>`` plus pip's configured registry (siblings such as ws-core are on no index:
they come from the wheelhouse), imports it, and fails when

- a sibling ws-* distribution came from anywhere but the wheelhouse (dependency confusion),
- the package pulled in a sibling or a heavy distribution that belongs to another package's field
  (``FORBIDDEN`` below: e.g. ws-core must not pull lightning, flwr, fastapi, ray or brevitas),
- ``__version__`` differs from the installed metadata, or py.typed / the license file is missing.

See docs/packaging.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES_DIR = ROOT / "packages"

# Sibling distributions each package may pull in, transitively, without extras (ARCHITECTURE.md §1:
# arrows only point down). ws-nas reaches ws-sushi only through its [sushi] extra.
SIBLINGS: dict[str, frozenset[str]] = {
    "ws-core": frozenset(),
    "ws-train": frozenset({"ws-core"}),
    "ws-nas": frozenset({"ws-core"}),
    "ws-fed": frozenset({"ws-core"}),
    "ws-serve": frozenset({"ws-core"}),
    "ws-sushi": frozenset({"ws-core"}),
    "weightshare": frozenset({"ws-core", "ws-train", "ws-serve"}),
}

# Heavy third-party distributions that belong to one field, and the packages that may pull each in
# (without extras). Ray only comes with extras (ws-serve[ray], ws-fed[simulation]); TensorRT likewise.
HEAVY: dict[str, frozenset[str]] = {
    "lightning": frozenset({"ws-train", "ws-nas", "weightshare"}),
    "pytorch-lightning": frozenset({"ws-train", "ws-nas", "weightshare"}),
    "torchmetrics": frozenset({"ws-train", "ws-nas", "weightshare"}),
    "flwr": frozenset({"ws-fed"}),
    # flwr itself requires fastapi and uvicorn (its SuperLink's control API), hence ws-fed
    "fastapi": frozenset({"ws-serve", "ws-fed", "weightshare"}),
    "uvicorn": frozenset({"ws-serve", "ws-fed", "weightshare"}),
    "brevitas": frozenset({"ws-sushi"}),
    "qonnx": frozenset({"ws-sushi"}),
    "ray": frozenset(),
    "torch-tensorrt": frozenset(),
}


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def forbidden(package: str) -> frozenset[str]:
    """Distributions that installing ``package`` alone must not bring in."""
    siblings = {p for p in SIBLINGS if p != package and p not in SIBLINGS[package]}
    heavy = {name for name, allowed in HEAVY.items() if package not in allowed}
    return frozenset(siblings | heavy)


def package_dirs(names: list[str]) -> list[Path]:
    """packages/<name> for the given names (all of them when empty); unknown names raise SystemExit."""
    dirs = {p.name: p for p in sorted(PACKAGES_DIR.iterdir()) if (p / "pyproject.toml").is_file()}
    unknown = sorted(set(names) - set(dirs))
    if unknown:
        raise SystemExit(f"unknown package(s) {', '.join(unknown)}; allowed: {', '.join(sorted(dirs))}")
    missing_policy = sorted(set(dirs) - set(SIBLINGS))
    if missing_policy:
        raise SystemExit(f"no SIBLINGS entry in {Path(__file__).name} for {', '.join(missing_policy)}")
    return [dirs[n] for n in (names or sorted(dirs))]


def import_name(package_dir: Path) -> str:
    """The single top-level import package under src/."""
    found = sorted(p.name for p in (package_dir / "src").iterdir() if (p / "__init__.py").is_file())
    if len(found) != 1:
        raise SystemExit(f"{package_dir}: expected one package under src/, got {found}")
    return found[0]


def _run(cmd: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], text=True, capture_output=True, **kwargs)


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


def build(names: list[str], outdir: Path) -> int:
    outdir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for pdir in package_dirs(names):
        stem = canonical(pdir.name).replace("-", "_")
        for old in [*outdir.glob(f"{stem}-*.whl"), *outdir.glob(f"{stem}-*.tar.gz")]:
            old.unlink()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"ws-build-{pdir.name}-") as tmp:
            src = Path(tmp) / pdir.name
            # symlinks=False (the default) copies the LICENSE link's target as a plain file
            shutil.copytree(pdir, src, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
            proc = _run([sys.executable, "-m", "build", "--outdir", outdir, src])
        built = sorted(p.name for p in [*outdir.glob(f"{stem}-*.whl"), *outdir.glob(f"{stem}-*.tar.gz")])
        if proc.returncode != 0 or len(built) != 2:
            failures += 1
            print(f"{pdir.name}: build FAILED (exit {proc.returncode}, built {built})\n{_tail(proc)}", flush=True)
        else:
            print(f"{pdir.name}: {' + '.join(built)} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 1 if failures else 0


# Runs inside the fresh environment: prints the installed distributions and what the package exposes.
_PROBE = r"""
import importlib, importlib.metadata as md, json, pathlib, sys
dist_name, module = sys.argv[1], sys.argv[2]
mod = importlib.import_module(module)
dist = md.distribution(dist_name)
files = [str(f) for f in (dist.files or [])]
print(json.dumps({
    "installed": sorted({d.metadata["Name"] for d in md.distributions()}),
    "version": dist.version,
    "__version__": getattr(mod, "__version__", None),
    "py_typed": (pathlib.Path(mod.__file__).parent / "py.typed").is_file(),
    "license_files": [f for f in files if ".dist-info/licenses/" in f.replace("\\", "/")],
}))
"""


def _wheel_for(package: str, wheelhouse: Path) -> Path:
    stem = canonical(package).replace("-", "_")
    wheels = sorted(wheelhouse.glob(f"{stem}-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one {stem}-*.whl in {wheelhouse}, got {[w.name for w in wheels]}: run make dist")
    return wheels[0]


def _declared_by(report: dict, name: str) -> list[str]:
    """Installed distributions whose Requires-Dist names ``name``, through no extra or an extra that was
    requested (other markers ignored): a hint for the fix."""
    parents = []
    for item in report.get("install", []):
        extras = {canonical(e) for e in item.get("requested_extras") or []}
        for req in item["metadata"].get("requires_dist", []) or []:
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
            if extra and canonical(extra.group(1)) not in extras:
                continue
            if match and canonical(match.group(1)) == name:
                parents.append(canonical(item["metadata"]["name"]))
                break
    return sorted(set(parents))


def check_one(pdir: Path, wheelhouse: Path, python: str) -> list[str]:
    package = pdir.name
    module = import_name(pdir)
    wheel = _wheel_for(package, wheelhouse)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"ws-check-{package}-") as tmp:
        venv, report_path = Path(tmp) / "venv", Path(tmp) / "report.json"
        proc = _run([python, "-m", "venv", "--without-pip", venv])
        if proc.returncode != 0:
            return [f"could not create a venv with {python}:\n{_tail(proc)}"]
        vpy = venv / "bin" / "python"
        # The dev environment's pip installs into the fresh one (pip --python), with pip's configured
        # registry plus the wheelhouse for the siblings, which are on no index.
        proc = _run([sys.executable, "-m", "pip", "--python", vpy, "install", "--no-compile",
                     "--find-links", wheelhouse, "--report", report_path, wheel], cwd=tmp)
        if proc.returncode != 0:
            return [f"pip install {wheel.name} --find-links {wheelhouse} failed:\n{_tail(proc)}"]
        report = json.loads(report_path.read_text())
        for item in report.get("install", []):
            name, url = canonical(item["metadata"]["name"]), item["download_info"]["url"]
            if name in SIBLINGS and not url.startswith(wheelhouse.resolve().as_uri()):
                problems.append(f"{name} was installed from {url}, allowed only the wheelhouse {wheelhouse}")
        proc = _run([vpy, "-c", _PROBE, package, module], cwd=tmp)
        if proc.returncode != 0:
            return [*problems, f"import {module} failed in the fresh environment:\n{_tail(proc)}"]
        probe = json.loads(proc.stdout.strip().splitlines()[-1])
    installed = {canonical(n) for n in probe["installed"]}
    bad = sorted(installed & forbidden(package))
    if bad:
        hints = "; ".join(f"{b} <- {', '.join(_declared_by(report, b)) or '?'}" for b in bad)
        allowed = ", ".join(sorted(SIBLINGS[package])) or "no sibling"
        problems.append(f"pulls in distributions it must not: {', '.join(bad)} (declared by: {hints}); "
                        f"allowed {allowed} and none of {', '.join(sorted(forbidden(package)))}")
    if probe["__version__"] != probe["version"]:
        problems.append(f"{module}.__version__ is {probe['__version__']!r}, metadata version {probe['version']!r}")
    if not probe["py_typed"]:
        problems.append(f"{module}/py.typed is missing from the installed package")
    if not probe["license_files"]:
        problems.append("no license file in the installed .dist-info/licenses/")
    siblings = sorted(installed & set(SIBLINGS) - {package})
    print(f"{package}: {len(installed)} distributions, siblings {', '.join(siblings) or 'none'}, "
          f"import {module} {probe['__version__']}", flush=True)
    return problems


def check(names: list[str], wheelhouse: Path, python: str) -> int:
    wheelhouse = wheelhouse.resolve()
    failed = []
    total = time.perf_counter()
    for pdir in package_dirs(names):
        start = time.perf_counter()
        print(f"{pdir.name}: installing alone into a fresh environment ...", flush=True)
        problems = check_one(pdir, wheelhouse, python)
        status = "OK" if not problems else "FAILED"
        print(f"{pdir.name}: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
        for problem in problems:
            print(f"  {pdir.name}: {problem}", flush=True)
        if problems:
            failed.append(pdir.name)
    print(f"check-dist: {'FAILED: ' + ', '.join(failed) if failed else 'all OK'} "
          f"({time.perf_counter() - total:.0f} s)", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a wheel and an sdist of each package into the wheelhouse")
    b.add_argument("--outdir", type=Path, default=ROOT / "dist")
    c = sub.add_parser("check", help="install each package alone from the wheelhouse and import it")
    c.add_argument("--wheelhouse", type=Path, default=ROOT / "dist")
    c.add_argument("--python", default=sys.executable, help="interpreter for the fresh environments")
    for p in (b, c):
        p.add_argument("packages", nargs="*", help="folder names in packages/ (default: all)")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build(args.packages, args.outdir.resolve())
    return check(args.packages, args.wheelhouse, args.python)


if __name__ == "__main__":
    sys.exit(main())

"""Every third-party module podq imports is declared in pyproject.toml: the engine's in
the core dependencies, the operator's in `operator`, the dashboard's in `web` (issue 12:
aiohttp was imported by the operator, declared only through kopf)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "podq"


def imported(files: list[Path]) -> set[str]:
    """Top-level modules imported at run time (not under `if TYPE_CHECKING`)."""
    found: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test)
                       for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"podq"}


def declared(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert match, requirement
        names.add(re.sub(r"[-_.]+", "-", match.group(0)).lower())
    return names


def distributions(modules: set[str]) -> dict[str, set[str]]:
    known = packages_distributions()
    missing = modules - set(known)
    assert not missing, f"imported but not installed: {missing}"
    return {m: {re.sub(r"[-_.]+", "-", d).lower() for d in known[m]} for m in modules}


def test_every_import_is_declared_where_it_is_needed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = declared(project["dependencies"])
    extras = {name: declared(reqs) for name, reqs in project["optional-dependencies"].items()}
    files = sorted(PACKAGE.rglob("*.py"))
    parts = {
        "engine": ([f for f in files if not {"operator", "web"} & set(f.relative_to(PACKAGE)
                                                                    .parts[:-1])
                    and f.name not in ("testing.py",)], core),
        "operator": ([f for f in files if f.relative_to(PACKAGE).parts[0] == "operator"],
                     core | extras["operator"]),
        "web": ([f for f in files if f.relative_to(PACKAGE).parts[0] == "web"],
                core | extras["web"]),
    }
    for part, (sources, allowed) in parts.items():
        assert sources, part
        for module, dists in distributions(imported(sources)).items():
            assert dists & allowed, f"{part} imports {module} ({dists}), not declared there"
    assert "aiohttp" in extras["operator"] and "tzdata" in core


def lock_pins() -> dict[str, str]:
    """constraints/test.txt: normalised name -> pinned version."""
    pins = {}
    for line in (ROOT / "constraints" / "test.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_upper_bounds_admit_what_the_lock_installs() -> None:
    """constraints/test.txt (the lock) satisfies pyproject's ranges."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins()
    requirements = [*project["dependencies"],
                    *(r for reqs in project["optional-dependencies"].values() for r in reqs)]
    for text in requirements:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name == "podq":
            continue
        assert name in pins, f"{name} is not in constraints/test.txt: run scripts/lock-deps"
        assert requirement.specifier.contains(pins[name]), (text, pins[name])


def test_the_test_environment_is_the_lock() -> None:
    """Every distribution podq[test,bench] pulls in, directly or not, is pinned in
    constraints/test.txt and installed at exactly that version (scripts/test installs
    with `pip install -c`): the lock is complete and in use."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    pins = lock_pins()
    wanted = [("podq", {"test", "bench"})]
    seen: set[str] = set()
    while wanted:
        name, extras = wanted.pop()
        for text in requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker and not any(marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            dep = re.sub(r"[-_.]+", "-", requirement.name).lower()
            if dep == "podq":  # podq[test] names podq[operator,web]
                wanted.append(("podq", set(requirement.extras)))
                continue
            key = f"{dep}[{','.join(sorted(requirement.extras))}]"
            if key in seen:
                continue
            seen.add(key)
            try:
                installed = version(dep)
            except PackageNotFoundError:
                raise AssertionError(f"{dep} ({text}, for {name}) is not installed") from None
            assert dep in pins, f"{dep} is not in constraints/test.txt: run scripts/lock-deps"
            assert installed == pins[dep], f"{dep} {installed} installed, {pins[dep]} locked"
            wanted.append((dep, set(requirement.extras)))
    assert len({key.split("[")[0] for key in seen}) >= 30, seen


def test_time_zones_come_with_podq_not_from_the_system() -> None:
    """With no system zone files (PYTHONTZPATH empty, as on a slim image without
    /usr/share/zoneinfo) CronJob time zones still resolve: tzdata is a dependency."""
    code = ("import zoneinfo; assert zoneinfo.TZPATH == (), zoneinfo.TZPATH; "
            "from podq.operator.cron import parse_schedule; "
            "print(parse_schedule('0 9 * * *', 'America/Argentina/Buenos_Aires').zone.key)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONTZPATH": ""}, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "America/Argentina/Buenos_Aires"

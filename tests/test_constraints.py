"""constraints.txt: the exact versions of the whole dependency set, the same on every machine.

Two checks (see docs/environment.md):

* the file itself: one `name==version` pin per package, and every dependency of pyproject.toml
  (the test extra included) pinned at a version its specifier allows; it fails when
  pyproject.toml changed and nobody ran scripts/lock.sh.
* this venv: every package of evolveflow's dependency tree is pinned and installed at the pinned
  version, and no pinned package is installed at another. Checked only when the venv says it was
  installed from this constraints.txt (the stamp scripts/setup.sh writes, as in CI where
  scripts/test.sh runs setup.sh first), or when EVOLVEFLOW_CHECK_LOCK=1 forces it (e.g. a machine
  installed by hand with `pip install -e '.[test]' -c constraints.txt`); skipped with the reason
  otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import sys
from pathlib import Path

import pytest

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # packaging is pinned in constraints.txt; pip's own copy serves elsewhere
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"
STAMP_NAME = ".evolveflow-installed"  # written by scripts/setup.sh in the venv
FORCE_VAR = "EVOLVEFLOW_CHECK_LOCK"


def read_pins(path: Path) -> dict[str, tuple[str, Version]]:
    """{canonical name: (name as written, pinned version)}; raises on anything but `name==version`."""
    pins: dict[str, tuple[str, Version]] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        where = f"{path.name}:{number}: {raw.strip()!r}"
        assert not req.url and not req.extras, f"{where}: only `name==version` pins belong here"
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
            f"{where}: not an exact `name==version` pin")
        name = canonicalize_name(req.name)
        assert name not in pins, f"{where}: {req.name} is pinned twice"
        pins[name] = (req.name, Version(specs[0].version))
    return pins


def project_requirements() -> list[Requirement]:
    """pyproject.toml's dependencies and every extra's (the test extra today)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        lines.extend(extra)
    return [Requirement(line) for line in lines]


def applies(req: Requirement, extras: set[str] = frozenset()) -> bool:
    """Whether the requirement's marker holds here (for one of the requested extras, if any)."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**default_environment(), "extra": e}) for e in (extras or {""}))


def check_pyproject_pinned(pins: dict[str, tuple[str, Version]]) -> list[str]:
    problems = []
    for req in project_requirements():
        if not applies(req):
            continue
        name = canonicalize_name(req.name)
        if name == "evolveflow":
            continue
        if name not in pins:
            problems.append(f"{req} (pyproject.toml) is not pinned in constraints.txt")
        elif not req.specifier.contains(pins[name][1], prereleases=True):
            problems.append(f"{req} (pyproject.toml) but constraints.txt pins {pins[name][0]}=={pins[name][1]}")
    return problems


def test_constraints_pin_every_dependency_of_pyproject():
    pins = read_pins(CONSTRAINTS)
    assert "evolveflow" not in pins, "constraints.txt pins evolveflow itself"
    assert len(pins) > 50, f"constraints.txt has only {len(pins)} pins: not the whole dependency set"
    problems = check_pyproject_pinned(pins)
    assert not problems, ("constraints.txt is out of date with pyproject.toml (run scripts/lock.sh and"
                          " commit constraints.txt):\n" + "\n".join(problems))


def installed_distributions() -> dict[str, md.Distribution]:
    """{canonical name: distribution} as imports see them (the first on sys.path wins)."""
    found: dict[str, md.Distribution] = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist)
    return found


def dependency_tree(installed: dict[str, md.Distribution], root: str, extras: set[str]) -> tuple[set[str], list[str]]:
    """Canonical names of everything `root[extras]` needs here (root excluded) and the missing ones."""
    needed: set[str] = set()
    missing: list[str] = []
    todo = [(canonicalize_name(root), set(extras))]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, frozenset(wanted)) in seen:
            continue
        seen.add((name, frozenset(wanted)))
        for line in installed[name].requires or []:
            req = Requirement(line)
            if not applies(req, wanted):
                continue
            dep = canonicalize_name(req.name)
            if dep not in installed:
                missing.append(f"{req} (needed by {installed[name].metadata['Name']}) is not installed")
                continue
            needed.add(dep)
            todo.append((dep, set(req.extras)))
    return needed, missing


def check_venv_matches(pins: dict[str, tuple[str, Version]], installed: dict[str, md.Distribution]) -> list[str]:
    if "evolveflow" not in installed:
        return ["evolveflow is not installed in this venv"]
    needed, problems = dependency_tree(installed, "evolveflow", {"test"})
    for name in sorted(needed - set(pins)):
        dist = installed[name]
        problems.append(f"{dist.metadata['Name']}=={dist.version} is installed and needed but not pinned")
    for name, (written, pinned) in sorted(pins.items()):
        if name in installed and Version(installed[name].version) != pinned:
            problems.append(f"{written} is {installed[name].version} here, constraints.txt pins {pinned}")
    return problems


def stamp_skip_reason(prefix: Path, constraints: Path) -> str | None:
    """Why this venv need not match constraints.txt, or None when it must."""
    if os.environ.get(FORCE_VAR) == "1":
        return None
    how = f"run scripts/setup.sh, or set {FORCE_VAR}=1 to check this venv anyway"
    if sys.prefix == sys.base_prefix:
        return f"not running in a venv: its packages need not match constraints.txt ({how})"
    stamp = prefix / STAMP_NAME
    if not stamp.is_file():
        return f"{prefix} was not installed by scripts/setup.sh (no {STAMP_NAME}): not checked ({how})"
    recorded = stamp.read_text().split()
    if not recorded:
        return f"{prefix} was installed before constraints.txt existed: not checked ({how})"
    if recorded[0] != hashlib.sha256(constraints.read_bytes()).hexdigest():
        return f"{prefix} was installed from another constraints.txt: not checked ({how})"
    return None


def test_venv_matches_constraints():
    reason = stamp_skip_reason(Path(sys.prefix), CONSTRAINTS)
    if reason:
        pytest.skip(reason)
    problems = check_venv_matches(read_pins(CONSTRAINTS), installed_distributions())
    assert not problems, (
        f"this venv does not match constraints.txt (re-install: {sys.prefix}/bin/python -m pip install"
        " -e '.[test]' -c constraints.txt; if pyproject.toml changed, first run scripts/lock.sh):\n"
        + "\n".join(problems))


# The checks themselves must be able to fail.

def test_a_dependency_outside_the_pins_is_reported(tmp_path):
    pins = read_pins(CONSTRAINTS)
    req = next(r for r in project_requirements() if r.specifier and canonicalize_name(r.name) in pins)
    name = canonicalize_name(req.name)
    # A version the specifier excludes: below its lowest bound, or 0 for `<` / `==` specifiers.
    bad = Version("0")
    assert not req.specifier.contains(bad), req
    changed = dict(pins, **{name: (pins[name][0], bad)})
    assert any(req.name in p and "pins" in p for p in check_pyproject_pinned(changed))
    dropped = {k: v for k, v in pins.items() if k != name}
    assert any("is not pinned" in p for p in check_pyproject_pinned(dropped))


def test_malformed_pins_are_refused(tmp_path):
    for line in ("tenacity", "tenacity>=9", "tenacity==9.*", "tenacity==9.2.1\ntenacity==9.2.0"):
        bad = tmp_path / "constraints.txt"
        bad.write_text(line + "\n")
        with pytest.raises(AssertionError):
            read_pins(bad)


def test_a_venv_that_differs_is_reported():
    installed = installed_distributions()
    if "evolveflow" not in installed:
        pytest.skip("evolveflow is not installed in this venv")
    needed, _ = dependency_tree(installed, "evolveflow", {"test"})
    exact = {name: (installed[name].metadata["Name"], Version(installed[name].version)) for name in needed}
    # (packages missing from this venv are reported too: not this test's concern)
    assert [p for p in check_venv_matches(exact, installed) if "not installed" not in p] == []
    some = sorted(needed)[0]
    other = dict(exact, **{some: (exact[some][0], Version("0.0.0.1"))})
    assert any("constraints.txt pins 0.0.0.1" in p for p in check_venv_matches(other, installed))
    fewer = {k: v for k, v in exact.items() if k != some}
    assert any("needed but not pinned" in p for p in check_venv_matches(fewer, installed))


def test_the_stamp_decides_whether_the_venv_is_checked(tmp_path, monkeypatch):
    monkeypatch.delenv(FORCE_VAR, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    lock = tmp_path / "constraints.txt"
    lock.write_text("tenacity==9.2.1\n")
    assert "no .evolveflow-installed" in stamp_skip_reason(tmp_path, lock)
    (tmp_path / STAMP_NAME).write_text("")
    assert "before constraints.txt existed" in stamp_skip_reason(tmp_path, lock)
    (tmp_path / STAMP_NAME).write_text("0" * 64 + " constraints.txt\n")
    assert "another constraints.txt" in stamp_skip_reason(tmp_path, lock)
    (tmp_path / STAMP_NAME).write_text(hashlib.sha256(lock.read_bytes()).hexdigest() + " constraints.txt\n")
    assert stamp_skip_reason(tmp_path, lock) is None
    (tmp_path / STAMP_NAME).unlink()
    monkeypatch.setenv(FORCE_VAR, "1")
    assert stamp_skip_reason(tmp_path, lock) is None

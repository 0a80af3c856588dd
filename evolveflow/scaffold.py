"""`evolveflow init NAME`: copy a small experiment that runs as is."""
from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path


class ScaffoldError(Exception):
    """The experiment cannot be created where asked."""


def scaffold_experiment(name: str, experiments_dir: Path) -> Path:
    """Creates experiments_dir/name from the built-in template; refuses to overwrite."""
    if not name or "/" in name or name.startswith("."):
        raise ScaffoldError(f"'{name}' is not a valid experiment name (use letters, digits, _ or -)")
    target = experiments_dir / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists: choose another name")
    template = resources.files("evolveflow") / "templates" / "experiment"
    with resources.as_file(template) as source:
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target

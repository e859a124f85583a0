"""The package's rooms (issue 22): no module over 450 lines, the root keeps only small shared modules, and the
README's layout table names every room and module there is."""
from __future__ import annotations

import re

import pytest

from tests.helpers.env import REPO

MAX_LINES = 450
ROOT_MODULES = {"__init__.py", "_moved.py", "choices.py", "types.py", "deprecation.py", "fileio.py", "imageinfo.py",
                "logs.py", "pretrained_settings.py"}
ROOMS = {"modeling", "ops", "engine", "evaluation", "inference", "export", "runtime", "checkpoint", "data", "cli",
         "benchmark"}


@pytest.mark.parametrize("package", ["effdet", "backbones", "heads"])
def test_no_module_is_over_450_lines(package):
    long = {p.relative_to(REPO).as_posix(): n for p in (REPO / package).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_root_keeps_only_small_shared_modules_and_the_rooms():
    root = REPO / "effdet"
    assert {p.name for p in root.glob("*.py")} == ROOT_MODULES
    assert {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} == ROOMS


def _layout_table() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Layout")
    return text[start:text.index("\n## ", start + 1)]


def test_the_readme_layout_names_every_module_of_the_package():
    """The README's layout table agrees with the code: every path it names exists; every module at effdet's root is
    named by its path, and every module of a room by its file name (or its folder) in the room's row. The command
    lines (cli/) and benchmark subcommands (benchmark/) are one module a command and are named as a set."""
    table = _layout_table()
    rows = {line.split("|")[1]: line for line in table.splitlines() if line.startswith("| `")}
    named = set(re.findall(r"`([\w/.-]+)`", table))
    top = ("effdet/", "backbones/", "heads/", "tests/", "tools/", "benchmarks/", "docs/", "configs/")
    assert sorted(p for p in named if p.startswith(top) and not (REPO / p).exists()) == []
    missing = []
    for module in sorted((REPO / "effdet").rglob("*.py")):
        parts = module.relative_to(REPO).parts
        if len(parts) == 2:
            if "/".join(parts) not in named:
                missing.append("/".join(parts))
            continue
        room = f"`{parts[0]}/{parts[1]}/`"
        row = next((line for first, line in rows.items() if room in first), None)
        if row is None:
            missing.append(f"{room} (no row)")
        elif parts[1] not in ("cli", "benchmark") and parts[-1] != "__init__.py" and \
                f"`{parts[2]}`" not in row and f"`{parts[2]}/`" not in row:
            missing.append("/".join(parts))
    assert missing == []

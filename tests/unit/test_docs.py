"""Code, docstrings, configs, tests and the docs point only to documents that ship with the repository."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A document reference: a path with a folder (docs/convergence.md) or an upper-case name (README.md). A lower-case
# bare name (search.md) is a file the code writes, not a document it points to.
REFERENCE = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)+[\w.-]+\.md|[A-Z][A-Z_]*\.md)\b")


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "effdet", "backbones", "heads", "tools", "benchmarks", "tests",
                             "configs", "docs", "Makefile", "setup.py", "README.md"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    return [name for name in listed.stdout.splitlines() if name.endswith((".py", ".yaml", ".yml", ".md", "Makefile"))]


def test_referenced_documents_exist_in_the_repository():
    files = tracked_files()
    assert "effdet/evaluation/report.py" in files and "tests/unit/test_weights.py" in files
    missing = []
    for name in files:
        for number, line in enumerate((REPO / name).read_text(encoding="utf-8").splitlines(), start=1):
            for reference in REFERENCE.findall(line):
                if not (REPO / reference).is_file():
                    missing.append(f"{name}:{number}: {reference}")
    assert not missing, "documents that are not in the repository:\n" + "\n".join(missing)

"""The project is licensed under Apache-2.0: the license text ships as LICENSE and the package metadata says so.

The metadata is built the way pip builds it (``setup.py egg_info``), not read back from our own setup.py source.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from email.parser import Parser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# SHA-256 of the terms of https://www.apache.org/licenses/LICENSE-2.0.txt (everything before "END OF TERMS AND
# CONDITIONS", whitespace collapsed to single spaces): computed from the Apache-2.0 LICENSE files that onnx and
# lightning ship, which agree. The appendix after it (how to apply the license) may be filled in or left out.
APACHE_2_TERMS_SHA256 = "09ae9bf1886f530f7338889ef805f37b288ec6adedd1e1e32058921acf05a782"


def test_license_file_is_the_apache_2_text():
    path = REPO / "LICENSE"
    assert path.is_file(), "no LICENSE file at the repository root"
    text = path.read_text(encoding="utf-8")
    assert "END OF TERMS AND CONDITIONS" in text
    terms = " ".join(text[:text.index("END OF TERMS AND CONDITIONS")].split())
    assert terms.startswith("Apache License Version 2.0, January 2004")
    assert hashlib.sha256(terms.encode()).hexdigest() == APACHE_2_TERMS_SHA256, "the terms differ from Apache-2.0"


def test_package_metadata_declares_apache_2(tmp_path):
    done = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = next(tmp_path.glob("*.egg-info"))
    metadata = Parser().parsestr((info / "PKG-INFO").read_text(encoding="utf-8"))
    assert metadata["Name"] == "effdet-lightning"
    assert (metadata.get("License-Expression") or metadata.get("License")) == "Apache-2.0"
    assert "License :: OSI Approved :: Apache Software License" in metadata.get_all("Classifier", [])
    assert "LICENSE" in metadata.get_all("License-File", [])  # the text travels with the wheel and the sdist

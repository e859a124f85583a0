"""The convergence benchmark's bookkeeping (benchmarks/convergence.py): epochs to reach the reference, the table, the
class-channel order of the reference's initial weights."""
from __future__ import annotations

import math

import torch

from benchmarks.convergence import epochs_to_reach, format_table, summarize


def test_convergence_summary_reports_epochs_to_reach_the_reference():
    ours = [{"epoch": e, "AP": a, "AP50": a} for e, a in [(1, 0.1), (2, 0.3), (3, 0.5)]]
    reference = [{"epoch": e, "AP": a, "AP50": a} for e, a in [(1, 0.2), (2, 0.25), (3, 0.28)]]
    summary = summarize("x", ours, reference)
    assert summary["ours_epochs_to_reference_final"] == 2
    assert summary["reference_epochs_to_reference_final"] == 3
    assert epochs_to_reach(reference, 0.9) is None
    assert "| x | 0.500 / 0.500 | 0.280 / 0.280 | 2 / 3 |" in format_table([summary])
    assert math.isclose(summary["ours_final_AP"], 0.5)


def test_reference_init_reorders_class_channels_to_ours():
    """convergence --same-init: the reference labels classes in the annotation file's order, ours by sorted id;
    the class head's channels are anchor-major ([anchors, classes])."""
    from benchmarks.reference_train import permute_class_channels

    anchors, classes = 2, 3
    weight = torch.arange(anchors * classes, dtype=torch.float32).reshape(anchors * classes, 1, 1, 1)
    state = {"class_net.predict.conv_pw.weight": weight, "class_net.predict.conv_pw.bias": weight.flatten(),
             "box_net.predict.conv_pw.bias": torch.arange(4.0)}
    out = permute_class_channels(state, classes, order=[1, 2, 0])
    assert out["class_net.predict.conv_pw.weight"].flatten().tolist() == [1, 2, 0, 4, 5, 3]
    assert out["class_net.predict.conv_pw.bias"].tolist() == [1, 2, 0, 4, 5, 3]
    assert torch.equal(out["box_net.predict.conv_pw.bias"], state["box_net.predict.conv_pw.bias"])

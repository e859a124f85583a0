"""Run the reference `effdet` package (and its `timm`) on random weights and save what it computes.

Executed by tests/parity/test_parity.py in a subprocess whose PYTHONPATH holds ONLY the reference (never this project):

    python tests/helpers/reference_runner.py OUT_DIR CASES_JSON

CASES_JSON is a list of cases, e.g.
    [{"id": "d0_512", "model": "tf_efficientdet_d0", "size": [512, 512]},
     {"id": "lite0_cls", "timm": "tf_efficientnet_lite0", "size": [224, 224]}]

For every case ``OUT_DIR/<id>.pt`` gets (all plain tensors / containers, loadable with weights_only=True):
    state_dict      the reference model's state dict, exactly as its own ``state_dict()`` writes it
    input           the random normalised input [1, 3, H, W]
    class_outputs   (detectors) list of per-level class logits [1, A*C, H_l, W_l]
    box_outputs     (detectors) list of per-level box regressions [1, A*4, H_l, W_l]
    detections      (detectors) DetBenchPredict output rows [K, 6]: x1, y1, x2, y2, score, class (1-based),
                    the zero padding rows removed
    logits          (timm classifiers) [1, num_classes]
    reference_file  where the reference package was imported from (the test checks it is not this project)

Weights are seeded random, with random batch-norm affine parameters, running statistics measured on the test
input (arbitrary per-channel values that keep activations of order one through the deep residual stack), random
redundant conv biases and fusion weights, so every tensor of the checkpoint changes the outputs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn as nn


def randomize(model: nn.Module, calibration_input: torch.Tensor, generator: torch.Generator) -> None:
    """Make every parameter and buffer matter while keeping activations of order one.

    Running statistics are measured on ``calibration_input`` (the test input) in train mode with stochastic
    depth off, so they are arbitrary per-channel values that still normalise. Random deep networks amplify
    any difference (float rounding included) layer after layer when their gain exceeds one, so BN scales are
    drawn below one and the statistics are not perturbed further (5% perturbations grow into activations of
    order 100 in D0).
    """

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=generator) * std)

    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            uniform(m.weight, 0.3, 0.8)  # a gain below one: random deep nets with more are chaotic
            normal(m.bias, 0.2)
        for name, p in model.named_parameters():
            if name.endswith("edge_weights"):
                uniform(p, 0.2, 2.0)  # positive: a node whose weights all clip to 0 outputs a constant
            elif name.endswith(".bias") and ("conv_pw" in name or ".conv.conv." in name) and "predict" not in name:
                normal(p, 0.1)  # the redundant biases of the TF ports (zero at init)
            elif name.endswith("predict.conv_pw.bias"):
                p.add_(torch.randn(p.shape, generator=generator) * 0.5)
        # Running statistics: one train-mode pass with a cumulative average = the batch statistics.
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for m in model.modules():  # stochastic depth off: the statistics must be those of the eval network
            if type(m).__name__ == "DropPath":
                m.eval()
        model(calibration_input)
        model.eval()


def scale_predictions(model: nn.Module, class_outputs, box_outputs) -> None:
    """Scale the (linear, BN-free) predict convs so that logits stay within ±6 of their bias and box codes
    within ±1.5, as a trained net's: no sigmoid-saturated (tied) scores, no overflowing box decodes. The
    outputs given are the eval-mode outputs before scaling."""
    with torch.no_grad():
        for head, outputs, limit in ((model.class_net, class_outputs, 6.0), (model.box_net, box_outputs, 1.5)):
            bias = head.predict.conv_pw.bias.view(1, -1, 1, 1)
            largest = max(float((out - bias).abs().max()) for out in outputs)
            head.predict.conv_pw.weight.mul_(min(1.0, limit / max(largest, 1e-6)))


def run_detector(case: dict, generator: torch.Generator) -> dict:
    """A reference detector: raw per-level outputs, then DetBenchPredict's own post-processing steps on them
    (top-k over all anchors x classes, decode, batched NMS at IoU 0.5, 100 detections), without a second
    forward pass."""
    import effdet
    from effdet.anchors import Anchors
    from effdet.bench import _batch_detection, _post_process

    height, width = case["size"]
    model = effdet.create_model(case["model"], pretrained=False, pretrained_backbone=False,
                                image_size=(height, width))
    image = torch.randn(1, 3, height, width, generator=generator)
    randomize(model, image, generator)
    config = model.config
    with torch.no_grad():
        scale_predictions(model, *model(image))
        class_outputs, box_outputs = model(image)
        top_class, top_box, indices, classes = _post_process(
            class_outputs, box_outputs, num_levels=config.num_levels, num_classes=config.num_classes,
            max_detection_points=config.max_detection_points)
        anchors = Anchors.from_config(config)
        detections = _batch_detection(1, top_class, top_box, anchors.boxes, indices, classes, None, None,
                                      max_det_per_image=config.max_det_per_image, soft_nms=False)[0]
    detections = detections[detections[:, 4] > 0]
    return dict(
        state_dict={k: v.clone() for k, v in model.state_dict().items()},
        input=image,
        class_outputs=[t.clone() for t in class_outputs],
        box_outputs=[t.clone() for t in box_outputs],
        detections=detections.clone(),
        num_classes=int(config.num_classes),
        max_detection_points=int(config.max_detection_points),
        max_det_per_image=int(config.max_det_per_image),
    )


def run_classifier(case: dict, generator: torch.Generator) -> dict:
    import timm

    height, width = case["size"]
    model = timm.create_model(case["timm"], pretrained=False)
    image = torch.randn(1, 3, height, width, generator=generator)
    randomize(model, image, generator)
    with torch.no_grad():
        logits = model(image)
    return dict(state_dict={k: v.clone() for k, v in model.state_dict().items()}, input=image, logits=logits.clone())


def main(out_dir: str, cases_json: str, threads: str) -> None:
    import effdet

    torch.set_num_threads(int(threads))  # the test runs its side at the same count (summation order)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for index, case in enumerate(json.loads(cases_json)):
        generator = torch.Generator().manual_seed(1000 + index)
        result = run_detector(case, generator) if "model" in case else run_classifier(case, generator)
        result["reference_file"] = str(Path(effdet.__file__).resolve())
        torch.save(result, out / f"{case['id']}.pt")
        print(f"{case['id']}: done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])

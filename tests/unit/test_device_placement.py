"""Nothing of ours allocates on the default device: with ``torch.set_default_device("meta")`` and CPU inputs, the
matcher, both losses, hard and soft post-processing, ``detect_batch`` and ``Predictor.detect`` compute on the CPU
(a tensor created without ``device=`` would land on the meta device and fail or leak). On a GPU the same mistake
puts a tensor on cuda:0 whatever the model's device, or on the CPU under a CUDA default: a crash or a silent copy.
torchvision's own ``batched_nms`` is allowed to use the default device (its coordinate trick does), so it runs under
a CPU default here."""
from __future__ import annotations

import pytest
import torch

import effdet
from effdet.modeling.assign import AnchorMatcher
from effdet.modeling.postprocess_settings import PostprocessSettings
from effdet.modeling.anchors import anchors_for
from effdet.modeling.decode import detect_batch
from effdet.modeling.loss import DetectionLoss
from effdet.inference.predictor import Predictor


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    model = effdet.create_model("efficientdet_lite0", num_classes=3, image_size=128).eval()
    with torch.no_grad():
        class_outputs, box_outputs = model(torch.randn(2, 3, 128, 128))
    return dict(
        model=model, class_outputs=class_outputs, box_outputs=box_outputs,
        anchors=anchors_for(model.config, (128, 128), torch.device("cpu")),
        boxes=torch.tensor([[[10., 10., 50., 60.], [0., 0., 0., 0.]], [[30., 40., 90., 120.], [5., 5., 40., 40.]]]),
        labels=torch.tensor([[1, -1], [0, 2]]),
        crowd_boxes=torch.tensor([[[0., 0., 20., 20.]], [[0., 0., 0., 0.]]]),
        crowd_mask=torch.tensor([[True], [False]]),
        images=torch.randint(0, 255, (2, 3, 128, 128), dtype=torch.uint8),
        scales=torch.tensor([1.0, 0.5]), sizes=torch.tensor([[128, 128], [256, 200]]),
        predictor=Predictor(model, ["a", "b", "c"], [1, 2, 3], PostprocessSettings(nms="hard"),
                            device=torch.device("cpu")),
    )


def tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [t for item in (value if isinstance(value, (list, tuple)) else []) for t in tensors(item)]


@pytest.fixture
def meta_default(monkeypatch):
    import torchvision.ops

    import effdet.ops.nms

    def nms_on_the_cpu(*args, **kwargs):  # torchvision's own (allowed), as it runs under a CPU default
        with torch.device("cpu"):
            return original(*args, **kwargs)

    original = torchvision.ops.batched_nms
    for module in (effdet.ops.nms, torchvision.ops):
        if hasattr(module, "batched_nms"):
            monkeypatch.setattr(module, "batched_nms", nms_on_the_cpu)
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def run(name: str, parts: dict):
    p = parts
    matcher = AnchorMatcher()
    if name == "matcher":
        return matcher(p["anchors"], p["boxes"], p["labels"], p["crowd_boxes"], p["crowd_mask"])
    if name in ("focal+huber", "focal+giou"):
        targets = matcher(p["anchors"], p["boxes"], p["labels"], p["crowd_boxes"], p["crowd_mask"])
        criterion = DetectionLoss(3, box_loss_type="huber" if name.endswith("huber") else "giou")
        return criterion(p["class_outputs"], p["box_outputs"], *targets, p["anchors"])
    if name in ("postprocess hard", "postprocess soft"):
        from effdet.ops.nms import postprocess

        return postprocess(p["class_outputs"], p["box_outputs"], p["anchors"], nms_method=name.split()[1])
    with torch.no_grad():
        if name == "detect_batch soft":
            return detect_batch(p["model"], p["images"], p["scales"], p["sizes"], PostprocessSettings(nms="soft"))
        return p["predictor"].detect(p["images"], p["scales"], p["sizes"])


@pytest.mark.parametrize("name", ["matcher", "focal+huber", "focal+giou", "postprocess hard", "postprocess soft",
                                  "detect_batch soft", "Predictor.detect hard"])
def test_nothing_of_ours_allocates_on_the_default_device(name, parts, meta_default):
    outputs = tensors(run(name, parts))
    assert outputs and all(t.device.type == "cpu" for t in outputs), {t.device for t in outputs}

"""ONNX export (effdet/export/onnx.py) and the ONNX runtimes: onnxruntime and OpenVINO against PyTorch.

Random weights (every float tensor redrawn, so scores are spread out and the detections are decisive), with
non-square inputs, for our efficientdet_d0 and efficientdet_lite0 and a converted reference tf_efficientdet_d0
(TF 'SAME' padding, frozen to static pads at the export size: 72x136 has odd sizes at every level).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import effdet
from effdet.export.verify import ExportMismatchError
from effdet.export.onnx import export_onnx
from effdet.export.metadata import read_metadata
from effdet.modeling.postprocess_settings import PostprocessSettings
from effdet.modeling.anchors import anchors_for
from effdet.ops.nms import postprocess
from effdet.runtime import open_session
from tests.unit.test_weights import random_state, reference_d0_shapes  # noqa: E402  (tests/unit/test_weights.py)

# Both runtimes come with `make test` (extras export, openvino): without one, these tests are skipped and counted,
# and with CI=true they fail (tests/conftest.py, `needs`).
pytestmark = pytest.mark.needs("onnxruntime")
RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.needs("openvino"))]  # of exported files
RAW_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-3  # px
SETTINGS = PostprocessSettings(nms="hard", score_threshold=0.05, pre_nms_top_k=1000, max_detections=100)


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw the batch norms (γ, β, running statistics) and the two heads' output layers, so that the class
    scores are spread out (the default head init makes them all ≈ 0.01) and the detections are decisive."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        if key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) * 0.5 + 0.75
        elif key.endswith(("running_mean", "bn.bias")) or ".norms." in key and key.endswith(".bias"):
            state[key] = torch.randn(value.shape, generator=generator) * 0.1
    model.load_state_dict(state)
    return spread_heads(model, generator)


LOGIT_MEAN, LOGIT_STD = -4.0, 1.5  # the class logits of spread_heads over the anchors of a random image


def spread_heads(model: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Redraw the class/box prediction layers: spread-out class scores, moderate box codes.

    The class layer is then rescaled so that its logits on a random image have mean LOGIT_MEAN and standard
    deviation LOGIT_STD: the top 100 scores then lie between about 0.15 and 0.98, most of them further apart than
    the score tolerance under which compare_detections calls scores tied. (Unscaled, the top 100 of an image sat
    within 0.001 to 0.03 of each other, near 0.95, and up to 83 of them were ties.)"""
    state = model.state_dict()
    for key, value in state.items():
        if key.startswith("class_net.predict."):  # spread-out class scores
            state[key] = torch.randn(value.shape, generator=generator) * (0.0 if key.endswith("bias") else 0.3)
        elif key.startswith("box_net.predict."):  # moderate box codes (exp(code) magnifies float rounding)
            state[key] = torch.randn(value.shape, generator=generator) * 0.02
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        classes, _ = model(torch.randn(1, 3, 128, 128, generator=generator))
        logits = torch.cat([c.flatten() for c in classes])
        scale = LOGIT_STD / float(logits.std())
        layer = model.class_net.predict.pointwise
        layer.weight.mul_(scale)
        layer.bias.mul_(scale).add_(LOGIT_MEAN - float(logits.mean()) * scale)
    return model


def converted_tf_d0(size, seed: int = 3) -> torch.nn.Module:
    """A converted reference tf_efficientdet_d0 checkpoint (reference key names, read by our converter) whose
    features depend on the input. Plain N(0, 0.1) draws for every tensor (``random_state``) shrink the signal in
    every block until the BiFPN outputs no longer depend on the image (measured: identical top-100 scores for two
    inputs, ~30 exact ties), so the detections compared nothing. Here the convolutions are drawn with fan-in
    scaling and the batch norms' γ near 1, the batch-norm statistics are re-estimated on random images (train-mode
    passes, cumulative average), and the prediction layers are spread (:func:`spread_heads`)."""
    generator = torch.Generator().manual_seed(seed)
    state = random_state(reference_d0_shapes())
    for key, value in list(state.items()):
        if value.ndim == 4:
            fan_in = value.shape[1] * value.shape[2] * value.shape[3]
            state[key] = torch.randn(value.shape, generator=generator) / fan_in ** 0.5
        elif key.endswith(".running_var"):
            gamma = key[:-len("running_var")] + "weight"
            state[gamma] = torch.rand(state[gamma].shape, generator=generator) * 0.5 + 0.75
    model = effdet.create_model(weights=state)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the passes below
    model.train()
    with torch.no_grad():
        for index in range(4):
            model(images(size, batch=4, seed=100 + index))
    return spread_heads(model.eval(), generator)


CASES = {  # name -> (model factory, export size (h, w))
    "efficientdet_d0": (lambda: randomized(effdet.create_model("efficientdet_d0", num_classes=20), 1), (128, 192)),
    "efficientdet_lite0": (lambda: randomized(effdet.create_model("efficientdet_lite0", num_classes=20), 2),
                           (160, 128)),
    # levels 9x17, 5x9, 3x5, 2x3, 1x2: asymmetric 'SAME' pads everywhere
    "tf_efficientdet_d0": (lambda: converted_tf_d0((72, 136)), (72, 136)),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> {"model", "size", "raw": path, "detections": path}; both forms with a free batch dimension."""
    torch.set_num_threads(2)
    torch.manual_seed(0)  # create_model's initial weights (not all redrawn) and the train-mode passes of converted_tf_d0
    folder = tmp_path_factory.mktemp("onnx")
    made = {}
    for name, (factory, size) in CASES.items():
        model = factory()
        entry = {"model": model, "size": size}
        for form in ("raw", "detections"):
            entry[form] = folder / f"{name}_{form}.onnx"
            export_onnx(model, entry[form], image_size=size, outputs=form, settings=SETTINGS, dynamic_batch=True,
                        verify=False)  # the tests below compare; the built-in check has its own test
        made[name] = entry
    return made


def images(size, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Normalised-looking inputs [batch, 3, h, w]."""
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def torch_raw(model, x):
    with torch.no_grad():
        classes, boxes = model(x)
    return [t.numpy() for t in classes + boxes]


def torch_detections(model, x, valid):
    config = model.config
    with torch.no_grad():
        classes, boxes = model(x)
    anchors = anchors_for(config, x.shape[-2:], x.device)
    return postprocess(classes, boxes, anchors, score_threshold=SETTINGS.score_threshold,
                       pre_nms_top_k=SETTINGS.pre_nms_top_k, nms_method="hard", iou_threshold=SETTINGS.iou_threshold,
                       max_detections=SETTINGS.max_detections, image_sizes=valid)


SCORE_TOLERANCE = RAW_TOLERANCE / 4  # a logit within RAW_TOLERANCE moves the sigmoid score by at most a quarter of it


def match_detections(ours: dict, theirs: dict, score_tol: float = SCORE_TOLERANCE) -> float:
    """Compare two detection sets with :func:`effdet.export.compare_detections`: equal counts, at least 10
    *decisive* detections (no other score within ``score_tol``; random heads give many exact near-ties, whose
    order float rounding decides) and at least half of them decisive, and every decisive detection has a partner
    of the same class and score; returns the largest box difference of the matched ones."""
    from effdet.export.verify import compare_detections

    def as_graph(d):
        n = len(np.asarray(d["scores"]))
        return {"batch_index": np.zeros(n, np.int64), "boxes": np.asarray(d["boxes"]).reshape(-1, 4),
                "scores": np.asarray(d["scores"]), "classes": np.asarray(d["labels"])}

    assert len(np.asarray(ours["scores"])) > 0, "no detections to compare"
    problem, worst = compare_detections(as_graph(ours), as_graph(theirs), box_tol=np.inf, score_tol=score_tol,
                                        min_matched=1.0)
    assert problem is None, problem
    return worst


def graph_detections(scores, image: int = 0) -> dict:
    """Graph-form detections of one image: the given scores, class 0, distinct boxes."""
    scores = np.asarray(scores, np.float32)
    return {"batch_index": np.full(len(scores), image, np.int64),
            "boxes": np.arange(4 * len(scores), dtype=np.float32).reshape(-1, 4) * 3,
            "scores": scores, "classes": np.zeros(len(scores), np.int64)}


def test_detection_comparisons_refuse_to_compare_ties_or_too_few_decisive_detections():
    """A detection is decisive when no other score of its image lies within score_tol (1e-5) of it. Each compared
    image needs at least 10 decisive detections and at least half of its detections decisive, else there is
    nothing to see: a comparison of tied scores would pass whatever the boxes are."""
    from effdet.export.verify import compare_detections

    spread = np.linspace(0.9, 0.1, 41)  # 0.02 apart: every one decisive
    cases = {  # name -> (scores, comparable?)
        "40 decisive": (spread[:40], True),
        "every score tied": (np.full(40, 0.5), False),
        "9 decisive, none tied": (spread[:9], False),
        "10 decisive, none tied": (spread[:10], True),
        "15 decisive and 25 tied": (np.concatenate([spread[:15], np.full(25, 0.05)]), False),
        "20 decisive and 20 tied": (np.concatenate([spread[:20], np.full(20, 0.05)]), True),
    }
    for name, (scores, comparable) in cases.items():
        ours = graph_detections(scores)
        problem, _ = compare_detections(ours, ours, box_tol=1e-3)
        assert (problem is None) == comparable, f"{name}: {problem}"
        if not comparable:
            assert "decisive" in problem, problem
            with pytest.raises(AssertionError, match="decisive"):  # the tests' helper refuses them too
                match_detections({"scores": scores, "boxes": ours["boxes"], "labels": ours["classes"]},
                                  {"scores": scores, "boxes": ours["boxes"], "labels": ours["classes"]})
    # per image: a well-spread image does not vouch for a tied one
    both = {k: np.concatenate([graph_detections(spread[:40], 0)[k], graph_detections(np.full(40, 0.5), 1)[k]])
            for k in ("batch_index", "boxes", "scores", "classes")}
    problem, _ = compare_detections(both, both, box_tol=1e-3)
    assert problem is not None and problem.startswith("image 1:"), problem
    # what the minimum protects: 40 decisive detections still catch a moved box
    moved = graph_detections(spread[:40])
    moved["boxes"] = moved["boxes"].copy()
    moved["boxes"][7] += 5.0
    assert compare_detections(graph_detections(spread[:40]), moved, box_tol=1e-3, min_matched=1.0)[0] is not None


def assert_same_detections(ours, theirs):
    theirs = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in theirs.items()}
    assert match_detections(ours, theirs) <= BOX_TOLERANCE


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", list(CASES))
def test_raw_outputs_and_detections_equal_pytorch(exported, name, runtime):
    entry = exported[name]
    model, size = entry["model"], entry["size"]
    session = open_session(entry["raw"], runtime, threads=2)
    x = images(size)
    got = session.run({"images": x.numpy()})
    expected = torch_raw(model, x)
    assert [g.shape for g in got] == [e.shape for e in expected]
    worst = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
    assert worst <= RAW_TOLERANCE, f"{name} via {runtime}: max |diff| {worst:.2e}"
    # the same detections after the torch post-processing of either output
    levels = len(got) // 2
    anchors = anchors_for(model.config, size, torch.device("cpu"))
    valid = [tuple(float(s) for s in size)]
    ours = postprocess([torch.from_numpy(g) for g in got[:levels]], [torch.from_numpy(g) for g in got[levels:]],
                       anchors, score_threshold=SETTINGS.score_threshold, pre_nms_top_k=SETTINGS.pre_nms_top_k,
                       nms_method="hard", max_detections=100, image_sizes=valid)[0]
    assert_same_detections({k: v.numpy() for k, v in ours.items()}, torch_detections(model, x, valid)[0])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", list(CASES))
def test_nms_graph_equals_pytorch_path(exported, name, runtime):
    """Top 100 of the graph (decode + per-level top-k + ONNX NonMaxSuppression) = the PyTorch postprocess."""
    entry = exported[name]
    model, size = entry["model"], entry["size"]
    session = open_session(entry["detections"], runtime, threads=2)
    x = images(size, batch=2, seed=1)
    valid = [(float(size[0]), float(size[1])), (size[0] * 0.75, size[1] * 0.5)]  # 2nd: a letterboxed image
    batch_index, boxes, scores, classes = session.run(
        {"images": x.numpy(), "image_sizes": np.asarray(valid, np.float32)})
    expected = torch_detections(model, x, valid)
    for image in range(2):
        keep = batch_index == image
        assert_same_detections({"boxes": boxes[keep], "scores": scores[keep], "labels": classes[keep]},
                               expected[image])
    assert boxes[batch_index == 1][:, [0, 2]].max() <= valid[1][1] + 1e-4  # clipped to the valid area


@pytest.mark.parametrize("form", ["raw", "detections"])
def test_dynamic_batch_1_and_4_agree(exported, form):
    entry = exported["efficientdet_lite0"]
    session = open_session(entry[form], "onnxruntime", threads=2)
    x = images(entry["size"], batch=4, seed=2).numpy()
    sizes = np.tile(np.asarray(entry["size"], np.float32), (4, 1))
    feed = lambda start, stop: {k: v for k, v in (("images", x[start:stop]), ("image_sizes", sizes[start:stop]))
                                if k in session.input_names}
    together = session.run(feed(0, 4))
    for image in range(4):
        alone = session.run(feed(image, image + 1))
        if form == "raw":
            for a, t in zip(alone, together):
                np.testing.assert_allclose(a[0], t[image], atol=1e-5)
        else:
            keep = together[0] == image
            assert len(alone[1]) == int(keep.sum()) > 0
            np.testing.assert_allclose(alone[1], together[1][keep], atol=1e-4)
            assert np.array_equal(alone[3], together[3][keep])


def test_folded_bn_equals_unfolded(exported, tmp_path):
    entry = exported["efficientdet_d0"]
    unfolded = tmp_path / "unfolded.onnx"
    export_onnx(entry["model"], unfolded, image_size=entry["size"], fold_bn=False, verify=False)
    x = images(entry["size"], seed=3).numpy()
    folded_out = open_session(entry["raw"], "onnxruntime").run({"images": x})
    unfolded_out = open_session(unfolded, "onnxruntime").run({"images": x})
    worst = max(float(np.abs(f - u).max()) for f, u in zip(folded_out, unfolded_out))
    assert worst <= 1e-4
    from backbones.layers import fuse_batchnorm
    import copy

    folded_model = fuse_batchnorm(copy.deepcopy(entry["model"]))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded_model.backbone.modules())
    x = torch.from_numpy(x)
    worst_torch = max(float((f - u).abs().max()) for f, u in zip(
        torch_raw_tensors(folded_model, x), torch_raw_tensors(entry["model"], x)))
    assert worst_torch <= 1e-4


def torch_raw_tensors(model, x):
    with torch.no_grad():
        classes, boxes = model(x)
    return classes + boxes


def test_tf_same_padding_is_static_and_metadata_is_written(exported):
    import onnx

    entry = exported["tf_efficientdet_d0"]
    graph = onnx.load(str(entry["raw"])).graph
    assert not any(n.op_type == "Ceil" for n in graph.node)  # the 'SAME' rule (a ceil of size / stride) is gone
    assert sum(n.op_type == "Pad" for n in graph.node) >= 5  # ... its pads are constants of the export size
    meta = read_metadata(entry["raw"])
    assert meta["image_size"] == [72, 136] and meta["outputs"] == "raw" and meta["model"] == "tf_efficientdet_d0"
    assert meta["class_names"][0] == "1" and meta["category_ids"][-1] == 90 and len(meta["mean"]) == 3
    assert [o.name for o in graph.output][:2] == ["class_3", "class_4"]
    detections = read_metadata(entry["detections"])
    assert detections["outputs"] == "detections" and detections["postprocess"]["max_detections"] == 100


def test_export_check_catches_a_wrong_graph(exported, tmp_path, monkeypatch):
    """The built-in comparison with onnxruntime fails loudly when the file does not match PyTorch."""
    import effdet.export.verify as export_module

    real = export_module._torch_reference
    monkeypatch.setattr(export_module, "_torch_reference",
                        lambda graph, inputs, names: [o + 0.01 for o in real(graph, inputs, names)])
    entry = exported["efficientdet_lite0"]
    with pytest.raises(ExportMismatchError, match="differs from PyTorch"):
        export_onnx(entry["model"], tmp_path / "x.onnx", image_size=entry["size"])


def test_export_check_says_when_the_detections_cannot_be_compared(tmp_path):
    """Every class score tied (a zeroed class layer: all 0.5): the built-in check has nothing decisive to compare,
    so the export warns that the file is not verified and reports no difference (before, it passed as checked)."""
    model = effdet.create_model("efficientdet_lite0", num_classes=3, image_size=[64, 64]).eval()
    with torch.no_grad():
        model.class_net.predict.pointwise.weight.zero_()
        model.class_net.predict.pointwise.bias.zero_()
    with pytest.warns(UserWarning, match="could not be compared with PyTorch .*too few decisive detections"):
        meta = export_onnx(model, tmp_path / "x.onnx", outputs="detections")
    assert meta["max_abs_diff"] is None


def test_on_the_fly_exports_run_the_onnx_checker(monkeypatch):
    """Predictor runtimes export the model to a temporary file (effdet.inference.runtime_network.network_for_runtime, verify=False):
    the file still goes through onnx.checker (the README: every export runs it)."""
    import onnx

    from effdet.inference.runtime_network import network_for_runtime

    checked = []
    real = onnx.checker.check_model
    monkeypatch.setattr(onnx.checker, "check_model",
                        lambda model, *args, **kwargs: checked.append(str(model)) or real(model, *args, **kwargs))
    model = effdet.create_model("efficientdet_lite0", num_classes=3, image_size=[64, 64]).eval()
    network_for_runtime(model, "onnxruntime", threads=1)
    assert len(checked) == 1 and checked[0].endswith("model.onnx"), checked


def test_bad_export_sizes_fail_clearly(tmp_path):
    model = effdet.create_model("efficientdet_lite0", num_classes=3)
    with pytest.raises(ValueError, match="multiples of 8"):
        export_onnx(model, tmp_path / "x.onnx", image_size=(100, 128))
    with pytest.raises(ValueError, match="outputs must be one of"):
        export_onnx(model, tmp_path / "x.onnx", outputs="boxes")

"""Train the reference ``effdet`` 0.4.1 with the convergence benchmark's recipe (a user loop around its DetBenchTrain).

Run ONLY as a script in a subprocess whose PYTHONPATH holds the reference folder and nothing of this project
(both packages are called ``effdet``); :mod:`benchmarks.convergence` starts it:

    python reference_train.py keys SPEC.json       # writes the backbone's state-dict keys (for the weight conversion)
    python reference_train.py train SPEC.json      # trains; one JSON line per epoch on stdout: {"epoch", "AP", "AP50"}
    python reference_train.py init SPEC.json OUT   # writes the initial weights `train` starts from (see below)

SPEC.json: ``{"model": "tf_efficientdet_lite0", "image_size": 256, "batch_size": 8, "epochs": 16, "seed": 0,
"lr": 0.008, "weight_decay": 1e-4, "warmup_epochs": 1, "warmup_start_factor": 0.1, "grad_clip": 10,
"ema_decay": 0.999, "ema_warmup": 50, "scale_range": [0.5, 1.5], "hflip": 0.5, "num_workers": 1, "threads": 1,
"train_images", "train_annotations", "val_images", "val_annotations", "backbone_weights" (a .pt state dict in
timm's key names, or null), "out" (folder)}``.

The recipe: AdamW (no weight decay on 1-d parameters), 1 warm-up epoch linear from 0.1x then per-step cosine to 0,
gradient-norm clipping, EMA with TF's warm-up ``min(decay, (1+t)/(k+t))``, ``k`` = the spec's ``ema_warmup`` (TF's 10 when
the spec has none; the recipe's 50 since 2026-12-07) (evaluated), the reference's own
transforms (RandomFlip + RandomResizePad with random bilinear/bicubic interpolation and mean fill), its
AnchorLabeler (0.5/0.5, in the loader workers) and loss; evaluation with its DetBenchPredict (hard NMS, 100
detections) on the EMA weights and pycocotools.

A diagnostic (``benchmarks/ema_windows.py --reference-spec``): with ``"extra_ema_warmups": [k, ...]`` in the spec the
run also keeps one EMA per ``k`` (updated with the run's own, never fed back) and, after the last epoch, prints one
line ``REFERENCE_EXTRA {"raw": {"AP", "AP50"}, "k<k>": {...}, ...}``: each average and the raw weights, evaluated as
above.
"""
from __future__ import annotations

import copy
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import torch


def build_model(spec: dict, num_classes: int):
    from effdet import EfficientDet, get_efficientdet_config

    config = get_efficientdet_config(spec["model"])
    config.image_size = (spec["image_size"], spec["image_size"])
    model = EfficientDet(config, pretrained_backbone=False)
    model.reset_head(num_classes=num_classes)
    return model


def permute_class_channels(state: dict, num_classes: int, order: list) -> dict:
    """``state`` with the class head's output channels reordered so that class ``i`` becomes old class
    ``order[i]`` (the head's channels are anchor-major: ``[anchors, classes]``)."""
    out = dict(state)
    for key, value in state.items():
        if key.startswith("class_net.predict.conv_pw."):
            anchors = value.shape[0] // num_classes
            out[key] = value.reshape(anchors, num_classes, *value.shape[1:])[:, order].reshape(value.shape).clone()
    return out


def initial_model(spec: dict):
    """The seeded model ``train`` starts from: random BiFPN/heads (the reference's own init) + ImageNet backbone."""
    random.seed(spec["seed"])
    np.random.seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    num_classes = len(_parser(spec["val_annotations"]).cat_ids)
    model = build_model(spec, num_classes)
    if spec.get("backbone_weights"):
        state = torch.load(spec["backbone_weights"], map_location="cpu")
        model.backbone.load_state_dict(state, strict=True)
    return model


def write_init(spec: dict, target: str) -> None:
    """Save :func:`initial_model` (reference key names) with the classes in sorted-category-id order, the order
    our models use (the reference labels classes in the annotation file's order), so ours can start from the very
    weights the reference starts from (``convergence --same-init``)."""
    model = initial_model(spec)
    label_ids = list(_parser(spec["val_annotations"]).cat_ids)  # the reference's class i is category label_ids[i]
    order = [label_ids.index(c) for c in sorted(label_ids)]
    torch.save(permute_class_channels(model.state_dict(), len(label_ids), order), target)


def write_keys(spec: dict) -> None:
    model = build_model(spec, 1)
    shapes = {k: list(v.shape) for k, v in model.backbone.state_dict().items()}
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    (Path(spec["out"]) / "reference_backbone_keys.json").write_text(json.dumps(shapes))


def _parser(annotations: str):
    from effdet.data.parsers import CocoParserCfg, create_parser

    parser = create_parser("coco", cfg=CocoParserCfg(ann_filename=annotations))
    # contiguous labels 1..N in the file's category order (the TF default uses raw ids as labels)
    parser.cat_ids_as_labels = False
    parser.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(parser.cat_ids)}
    return parser


def _loaders(spec: dict, model):
    from effdet.anchors import AnchorLabeler, Anchors
    from effdet.data import DetectionDatset
    from effdet.data.loader import DetectionFastCollate
    from effdet.data.transforms import (Compose, ImageToNumpy, RandomFlip, RandomResizePad, ResizePad,
                                        resolve_fill_color)

    config = model.config
    fill = resolve_fill_color("mean", config.mean)
    size = spec["image_size"]
    train_tf = Compose([RandomFlip(horizontal=True, prob=spec["hflip"]),
                        RandomResizePad(size, scale=tuple(spec["scale_range"]), interpolation="random",
                                        fill_color=fill),
                        ImageToNumpy()])
    eval_tf = Compose([ResizePad(size, interpolation="bilinear", fill_color=fill), ImageToNumpy()])
    train_set = DetectionDatset(Path(spec["train_images"]), parser=_parser(spec["train_annotations"]), transform=train_tf)
    val_set = DetectionDatset(Path(spec["val_images"]), parser=_parser(spec["val_annotations"]), transform=eval_tf)
    labeler = AnchorLabeler(Anchors.from_config(config), config.num_classes, match_threshold=0.5)
    generator = torch.Generator().manual_seed(spec["seed"])
    workers = spec.get("num_workers", 1)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=spec["batch_size"], shuffle=True, num_workers=workers, generator=generator,
        collate_fn=DetectionFastCollate(anchor_labeler=labeler), drop_last=False,
        persistent_workers=workers > 0)
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=spec["batch_size"], shuffle=False, num_workers=workers,
        collate_fn=DetectionFastCollate(anchor_labeler=None), persistent_workers=workers > 0)
    return train_set, val_set, train_loader, val_loader


def _normalizer(config):
    mean = torch.tensor([255.0 * m for m in config.mean]).view(1, 3, 1, 1)
    std = torch.tensor([255.0 * s for s in config.std]).view(1, 3, 1, 1)
    return lambda images: (images.float() - mean) / std


def _evaluate(ema_model, val_set, val_loader, normalize) -> dict:
    from effdet import DetBenchPredict
    from pycocotools.cocoeval import COCOeval

    bench = DetBenchPredict(ema_model).eval()
    parser = val_set.parser
    label_to_cat = {v: k for k, v in parser.cat_id_to_label.items()}
    results = []
    with torch.no_grad():
        for images, target in val_loader:
            detections = bench(normalize(images), img_info={"img_scale": target["img_scale"],
                                                            "img_size": target["img_size"]})
            for row, index in zip(detections, target["img_idx"].tolist()):
                image_id = parser.img_ids[index]
                for x1, y1, x2, y2, score, label in row.tolist():
                    if score <= 0.001:
                        continue
                    results.append({"image_id": image_id, "category_id": label_to_cat[int(label)],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    if not results:
        return {"AP": 0.0, "AP50": 0.0}
    coco = parser.coco
    evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
    evaluator.params.imgIds = list(parser.img_ids)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {"AP": float(evaluator.stats[0]), "AP50": float(evaluator.stats[1])}


def train(spec: dict) -> None:
    from effdet import DetBenchTrain

    torch.set_num_threads(int(spec.get("threads", 1)))
    model = initial_model(spec)
    train_set, val_set, train_loader, val_loader = _loaders(spec, model)
    bench = DetBenchTrain(model, create_labeler=False)
    normalize = _normalizer(model.config)

    decay, no_decay = [], []
    for param in bench.parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": spec["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=spec["lr"])
    steps_per_epoch = len(train_loader)
    total = spec["epochs"] * steps_per_epoch
    warmup = int(round(spec["warmup_epochs"] * steps_per_epoch))
    start = spec["warmup_start_factor"]

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1.0 - start) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    warmups = {"own": float(spec.get("ema_warmup", 10.0)),
               **{f"k{k:g}": float(k) for k in spec.get("extra_ema_warmups", [])}}
    averages = {name: copy.deepcopy(model).eval() for name in warmups}
    for average in averages.values():
        for p in average.parameters():
            p.requires_grad_(False)
    ema = averages["own"]
    updates = 0
    for epoch in range(spec["epochs"]):
        bench.train()
        losses = []
        for images, target in train_loader:
            output = bench(normalize(images), target)
            optimizer.zero_grad(set_to_none=True)
            output["loss"].backward()
            torch.nn.utils.clip_grad_norm_(bench.parameters(), spec["grad_clip"])
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                for name, average in averages.items():
                    d = min(spec["ema_decay"], (1.0 + updates) / (warmups[name] + updates))
                    for e, m in zip(average.state_dict().values(), model.state_dict().values()):
                        if e.is_floating_point():
                            e.lerp_(m, 1.0 - d)
                        else:
                            e.copy_(m)
            updates += 1
            losses.append(float(output["loss"]))
        metrics = _evaluate(ema, val_set, val_loader, normalize)
        line = {"epoch": epoch + 1, "AP": metrics["AP"], "AP50": metrics["AP50"],
                "train_loss": sum(losses) / max(1, len(losses)), "steps": updates}
        print("REFERENCE_EPOCH " + json.dumps(line), flush=True)
    if len(averages) > 1:  # after the last epoch: the evaluations draw no random number the training still uses
        extra = {"raw": _evaluate(model.eval(), val_set, val_loader, normalize)}
        extra.update({name: _evaluate(average, val_set, val_loader, normalize)
                      for name, average in averages.items() if name != "own"})
        print("REFERENCE_EXTRA " + json.dumps(extra), flush=True)


def main() -> int:
    mode, spec_path = sys.argv[1], sys.argv[2]
    spec = json.loads(Path(spec_path).read_text())
    import effdet

    print("REFERENCE_FILE " + str(Path(effdet.__file__).resolve()), flush=True)
    if not (Path(effdet.__file__).parent / "bench.py").is_file():
        raise SystemExit(f"'effdet' resolved to {effdet.__file__}, not the reference package: put only the "
                         "reference folder on PYTHONPATH")
    if mode == "keys":
        write_keys(spec)
    elif mode == "train":
        train(spec)
    elif mode == "init":
        write_init(spec, sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode!r}: keys | train | init")
    return 0


if __name__ == "__main__":
    sys.exit(main())

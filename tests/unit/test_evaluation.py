"""COCO evaluation layer: conversions, hand-computed AP values, the two COCO evaluators (coco_eval), distributed
gathering, files."""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
import pytest
import torch

from benchmarks.cocoeval import benchmark_coco_eval, synthetic_coco_data
from effdet.evaluation.report import (
    STAT_KEYS,
    CocoEvaluator,
    detections_to_coco_results,
    evaluate_coco,
    format_coco_summary,
    format_per_class_table,
    format_stats_table,
    save_metrics,
    write_json_atomic,
)

COCO_EVALUATORS = ["pycocotools", "faster_coco_eval"]
COCO_IOU_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]
COCO_RECALL_THRESHOLDS = [i / 100 for i in range(101)]


# ------------------------------------------------------------------------------------------------
# helpers: tiny GT in memory, hand-computed IoU
# ------------------------------------------------------------------------------------------------

def make_gt(objects: dict[int, list[tuple[list[float], int]]], categories: list[tuple[int, str]]) -> dict:
    """COCO GT dict from {image_id: [(xywh, category_id), ...]}; images 200x200."""
    images = [{"id": i, "width": 200, "height": 200, "file_name": f"{i}.jpg"} for i in sorted(objects)]
    annotations = []
    for image_id in sorted(objects):
        for bbox, category_id in objects[image_id]:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                "bbox": list(map(float, bbox)), "area": float(bbox[2] * bbox[3]), "iscrowd": 0,
            })
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name} for cid, name in categories],
    }


def gt_as_results(gt: dict, score: float = 1.0) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
        for a in gt["annotations"]
    ]


def iou_xywh(a: list[float], b: list[float]) -> float:
    inter_w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def stats_only(metrics: dict) -> dict:
    return {k: metrics[k] for k in STAT_KEYS}


# one small (16x16), one medium (50x50) and one large (120x120) object per image kind
SIZED_OBJECTS = {
    1: [([10, 10, 16, 16], 1), ([60, 20, 50, 50], 1)],
    2: [([30, 40, 120, 120], 1)],
    3: [([5, 5, 16, 16], 1), ([100, 100, 50, 50], 1), ([0, 60, 120, 120], 1)],
}


# ------------------------------------------------------------------------------------------------
# detections_to_coco_results
# ------------------------------------------------------------------------------------------------

def test_detections_to_coco_results_maps_labels_and_converts_boxes():
    category_ids = [1, 3, 7]
    detections = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.123456, 1.0, 5.5, 2.25]]),
            "scores": torch.tensor([0.9, 0.1234567]),
            "labels": torch.tensor([2, 0]),
        },
        {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, dtype=np.int64)},
        {"boxes": np.array([[1.0, 2.0, 3.0, 4.0]]), "scores": np.array([0.5]), "labels": np.array([1])},
    ]
    results = detections_to_coco_results([11, 12, np.int64(13)], detections, category_ids)

    assert [r["image_id"] for r in results] == [11, 11, 13]
    assert [r["category_id"] for r in results] == [7, 1, 3]
    assert results[0]["bbox"] == [10.0, 20.0, 20.0, 40.0]
    assert results[1]["bbox"] == [0.12, 1.0, 5.38, 1.25]  # rounded to 1/100 px
    assert results[1]["score"] == pytest.approx(0.12346, abs=1e-12)
    # and back: category id -> contiguous label
    assert [category_ids.index(r["category_id"]) for r in results] == [2, 0, 1]
    assert all(type(v) is float for r in results for v in r["bbox"])
    json.dumps(results)  # plain python types only


def test_detections_to_coco_results_rejects_bad_input():
    det = {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([3])}
    with pytest.raises(ValueError, match=r"label 3 is outside 0..2"):
        detections_to_coco_results([1], [det], [1, 3, 7])
    with pytest.raises(ValueError, match="2 image ids for 1 detection"):
        detections_to_coco_results([1, 2], [det], [1, 3, 7, 9])
    det_bad = {"boxes": torch.zeros(2, 4), "scores": torch.ones(1), "labels": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(ValueError, match="same length"):
        detections_to_coco_results([1], [det_bad], [1])


# ------------------------------------------------------------------------------------------------
# evaluate_coco: numbers computed by hand
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("coco_eval", COCO_EVALUATORS)
def test_perfect_detections_give_ap_one(coco_eval):
    gt = make_gt(SIZED_OBJECTS, [(1, "thing")])
    metrics = evaluate_coco(gt, gt_as_results(gt), coco_eval=coco_eval, verbose=False)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert metrics[key] == pytest.approx(1.0, abs=1e-12), key
    # maxDets=1: only one of the objects of each image can be found: (1 + 1 + 1) / 6 objects
    assert metrics["AR1"] == pytest.approx(3 / 6, abs=1e-12)
    assert metrics["per_class"] == {"thing": pytest.approx(1.0, abs=1e-12)}


def dense_image(count: int = 300, side: float = 20.0) -> dict:
    """One 1000 x 1000 image holding ``count`` separate ``side`` px objects (a 20 x 15 grid, 50 px apart)."""
    boxes = [[50.0 * (i % 20), 50.0 * (i // 20), side, side] for i in range(count)]
    gt = make_gt({1: [(box, 1) for box in boxes]}, [(1, "thing")])
    gt["images"][0].update(width=1000, height=1000)
    return gt


@pytest.mark.parametrize("coco_eval", COCO_EVALUATORS)
def test_dense_images_are_scored_with_max_detections_not_cut_at_100(coco_eval):
    # 300 perfect detections of 300 objects (scores decreasing). COCO's maxDets 100 scores the best 100 only: recall
    # at most 100 / 300, so AP about 1/3 (precision 1 up to recall 1/3, then 0). Scored with max_dets=300 every one
    # counts: AP 1.
    gt = dense_image()
    results = [dict(r, score=1.0 - 0.001 * i) for i, r in enumerate(gt_as_results(gt))]
    capped = evaluate_coco(gt, results, coco_eval=coco_eval, verbose=False)
    assert capped["max_dets"] == 100
    assert capped["AP"] < 0.5 and capped["AR100"] == pytest.approx(100 / 300, abs=1e-9)
    dense = evaluate_coco(gt, results, coco_eval=coco_eval, verbose=False, max_dets=300)
    assert dense["max_dets"] == 300
    for key in ("AP", "AP50", "AP75", "APs", "AR100", "ARs"):
        assert dense[key] == pytest.approx(1.0, abs=1e-12), key
    assert dense["AR1"] == pytest.approx(1 / 300, abs=1e-9) and dense["AR10"] == pytest.approx(10 / 300, abs=1e-9)
    assert dense["per_class"] == {"thing": pytest.approx(1.0, abs=1e-12)}
    assert "maxDets=300" in format_coco_summary(dense) and "maxDets=100" not in format_coco_summary(dense)
    # below 100 COCO's 100 stays; the evaluator of validation and tools/eval.py takes eval.max_detections
    assert evaluate_coco(gt, results, coco_eval=coco_eval, verbose=False, max_dets=50)["max_dets"] == 100
    evaluator = CocoEvaluator(gt, [1], ["thing"], coco_eval, max_dets=300)
    evaluator.update([1], [{"boxes": np.asarray([[x, y, x + w, y + h] for x, y, w, h in
                                                  (r["bbox"] for r in results)]),
                            "scores": np.asarray([r["score"] for r in results]), "labels": np.zeros(300, np.int64)}])
    computed = evaluator.compute()
    assert computed["AP"] == pytest.approx(1.0, abs=1e-12) and computed["max_dets"] == 300


@pytest.mark.parametrize("coco_eval", COCO_EVALUATORS)
def test_box_with_iou_0_6_gives_ap_0_3(coco_eval):
    gt_box = [20.0, 30.0, 40.0, 40.0]  # medium object (area 1600)
    shifted = [30.0, 30.0, 40.0, 40.0]  # shifted right by 1/4 of its width
    iou = iou_xywh(gt_box, shifted)
    assert iou == 0.6  # 1200 / (1600 + 1600 - 1200)
    matched_thresholds = sum(iou >= t for t in COCO_IOU_THRESHOLDS)  # 0.50, 0.55, 0.60
    expected_ap = matched_thresholds / len(COCO_IOU_THRESHOLDS)
    assert expected_ap == 0.3

    gt = make_gt({1: [(gt_box, 1)], 2: [(gt_box, 1)], 3: [(gt_box, 1)]}, [(1, "thing")])
    results = [{"image_id": i, "category_id": 1, "bbox": shifted, "score": 0.9} for i in (1, 2, 3)]
    metrics = evaluate_coco(gt, results, coco_eval=coco_eval, verbose=False)

    assert metrics["AP"] == pytest.approx(expected_ap, abs=1e-12)
    assert metrics["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP75"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["APm"] == pytest.approx(expected_ap, abs=1e-12)
    assert metrics["AR100"] == pytest.approx(expected_ap, abs=1e-12)
    # no GT in the small/large ranges: COCOeval's "undefined" (-1) is kept as -1.0
    assert metrics["APs"] == -1.0 and metrics["APl"] == -1.0
    assert metrics["ARs"] == -1.0 and metrics["ARl"] == -1.0


@pytest.mark.parametrize("coco_eval", COCO_EVALUATORS)
def test_non_contiguous_category_ids_and_per_class_ap(coco_eval):
    categories = [(1, "cat"), (3, "dog"), (7, "bird"), (9, "fish")]  # fish has no GT
    category_ids = [cid for cid, _ in categories]
    gt_box = [20.0, 30.0, 40.0, 40.0]
    gt = make_gt({1: [(gt_box, 1), ([100, 100, 60, 60], 3)], 2: [([50, 50, 30, 30], 7)]}, categories)

    def xyxy(b):
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]

    detections = [
        {  # cat: IoU 0.6 -> AP 0.3; dog: exact -> AP 1
            "boxes": torch.tensor([xyxy([30.0, 30.0, 40.0, 40.0]), xyxy([100, 100, 60, 60])]),
            "scores": torch.tensor([0.8, 0.7]),
            "labels": torch.tensor([0, 1]),
        },
        {  # the bird is missed; a fish false positive (no fish GT anywhere)
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
            "scores": torch.tensor([0.6]),
            "labels": torch.tensor([3]),
        },
    ]
    results = detections_to_coco_results([1, 2], detections, category_ids)
    assert sorted(r["category_id"] for r in results) == [1, 3, 9]

    metrics = evaluate_coco(gt, results, coco_eval=coco_eval, verbose=False)
    per_class = metrics["per_class"]
    assert set(per_class) == {"cat", "dog", "bird", "fish"}
    assert per_class["cat"] == pytest.approx(0.3, abs=1e-12)
    assert per_class["dog"] == pytest.approx(1.0, abs=1e-12)
    assert per_class["bird"] == pytest.approx(0.0, abs=1e-12)
    assert per_class["fish"] is None
    # overall AP = mean over classes with GT
    assert metrics["AP"] == pytest.approx((0.3 + 1.0 + 0.0) / 3, abs=1e-12)

    renamed = evaluate_coco(gt, results, coco_eval=coco_eval, verbose=False,
                            class_names={1: "Cat", 3: "Dog", 7: "Bird", 9: "Fish"})
    assert renamed["per_class"]["Dog"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="class_names has 2 names but the ground truth has 4"):
        evaluate_coco(gt, results, coco_eval=coco_eval, verbose=False, class_names=["a", "b"])


@pytest.mark.parametrize("coco_eval", COCO_EVALUATORS)
def test_empty_results_give_zeros(coco_eval, tmp_path):
    gt = make_gt(SIZED_OBJECTS, [(1, "thing"), (2, "other")])
    gt["annotations"][0]["category_id"] = 2
    metrics = evaluate_coco(gt, [], coco_eval=coco_eval, verbose=False)
    assert stats_only(metrics) == {k: 0.0 for k in STAT_KEYS}
    assert metrics["per_class"] == {"thing": 0.0, "other": 0.0}

    gt_path, results_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text("[]")
    from_files = evaluate_coco(str(gt_path), results_path, coco_eval=coco_eval, verbose=False)
    assert stats_only(from_files) == {k: 0.0 for k in STAT_KEYS}


@pytest.mark.parametrize("coco_eval", COCO_EVALUATORS)
def test_images_without_detections_count_as_misses(coco_eval):
    box = [20.0, 30.0, 40.0, 40.0]
    gt = make_gt({1: [(box, 1)], 2: [(box, 1)]}, [(1, "thing")])
    results = [{"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9}]  # image 2 gets nothing
    metrics = evaluate_coco(gt, results, coco_eval=coco_eval, verbose=False)

    # one of two objects found, precision 1 up to recall 0.5 and 0 beyond it
    expected_ap = sum(r <= 0.5 for r in COCO_RECALL_THRESHOLDS) / len(COCO_RECALL_THRESHOLDS)  # 51/101
    assert metrics["AP"] == pytest.approx(expected_ap, abs=1e-12)
    assert metrics["AP50"] == pytest.approx(expected_ap, abs=1e-12)
    assert metrics["AR100"] == pytest.approx(0.5, abs=1e-12)

    only_image_1 = evaluate_coco(gt, results, image_ids=[1], coco_eval=coco_eval, verbose=False)
    assert only_image_1["AP"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="image_ids are not in the ground truth"):
        evaluate_coco(gt, results, image_ids=[1, 99], coco_eval=coco_eval, verbose=False)


def test_results_for_unknown_images_and_unknown_coco_evaluator_fail_clearly():
    gt = make_gt({1: [([0, 0, 40, 40], 1)]}, [(1, "thing")])
    with pytest.raises(ValueError, match=r"1 result image ids are not in the ground truth \(first: \[5\]\)"):
        evaluate_coco(gt, [{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}], verbose=False)
    with pytest.raises(ValueError, match="unknown COCO evaluator 'detectron'"):
        evaluate_coco(gt, [], coco_eval="detectron", verbose=False)


def test_missing_faster_coco_eval_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes `import faster_coco_eval` fail
    gt = make_gt({1: [([0, 0, 40, 40], 1)]}, [(1, "thing")])
    with pytest.raises(ImportError, match="pip install faster-coco-eval"):
        evaluate_coco(gt, [], coco_eval="faster_coco_eval", verbose=False)


def test_evaluate_does_not_modify_caller_results_and_prints_summary(capsys):
    gt = make_gt(SIZED_OBJECTS, [(1, "thing")])
    results = gt_as_results(gt)
    snapshot = json.loads(json.dumps(results))
    metrics = evaluate_coco(gt, results, verbose=True)
    assert results == snapshot  # COCO.loadRes adds id/area/segmentation to its own copies only

    lines = capsys.readouterr().out.rstrip("\n").splitlines()
    assert len(lines) == 12
    assert lines[0] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000"
    assert lines[6] == " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.500"
    assert format_coco_summary(metrics).splitlines() == lines


def test_faster_coco_eval_matches_pycocotools():
    gt, results = synthetic_coco_data(num_images=40, dets_per_image=30, num_classes=6, seed=3)
    reference = evaluate_coco(gt, results, coco_eval="pycocotools", verbose=False)
    faster = evaluate_coco(gt, results, coco_eval="faster_coco_eval", verbose=False)
    assert 0.05 < reference["AP"] < 0.95  # a non-trivial operating point
    for key in STAT_KEYS:
        assert faster[key] == pytest.approx(reference[key], abs=1e-9), key
    assert faster["per_class"].keys() == reference["per_class"].keys()
    for name, ap in reference["per_class"].items():
        assert faster["per_class"][name] == pytest.approx(ap, abs=1e-9), name


# ------------------------------------------------------------------------------------------------
# CocoEvaluator
# ------------------------------------------------------------------------------------------------

def synthetic_detections(seed: int = 5, num_images: int = 13):
    """GT dict, category ids, and per-image detection dicts (xyxy tensors, contiguous labels)."""
    gt, results = synthetic_coco_data(num_images=num_images, dets_per_image=20, num_classes=4, seed=seed)
    category_ids = [c["id"] for c in gt["categories"]]
    per_image: dict[int, list[dict]] = {img["id"]: [] for img in gt["images"]}
    for r in results:
        per_image[r["image_id"]].append(r)
    image_ids = sorted(per_image)
    detections = []
    for image_id in image_ids:
        rs = per_image[image_id]
        xywh = torch.tensor([r["bbox"] for r in rs], dtype=torch.float64)
        detections.append({
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
            "scores": torch.tensor([r["score"] for r in rs]),
            "labels": torch.tensor([category_ids.index(r["category_id"]) for r in rs]),
        })
    return gt, category_ids, image_ids, detections


def test_coco_evaluator_single_process_matches_evaluate_coco(caplog):
    gt, category_ids, image_ids, detections = synthetic_detections()
    reference = evaluate_coco(gt, detections_to_coco_results(image_ids, detections, category_ids), verbose=False)

    evaluator = CocoEvaluator(gt, category_ids, [f"c{i}" for i in range(len(category_ids))])
    evaluator.update(image_ids[:5], detections[:5])
    evaluator.update(image_ids[4:], detections[4:])  # image 5 seen twice: scored once
    assert evaluator.num_images == len(image_ids)
    metrics = evaluator.compute()
    assert stats_only(metrics) == stats_only(reference)
    assert list(metrics["per_class"]) == ["c0", "c1", "c2", "c3"]
    assert list(metrics["per_class"].values()) == list(reference["per_class"].values())

    evaluator.reset()
    evaluator.update(image_ids[:9], detections[:9])
    with caplog.at_level(logging.WARNING, logger="effdet.evaluation"):
        partial = evaluator.compute()
    assert "4 of 13 ground-truth images received no predictions" in caplog.text
    covering_all = evaluate_coco(gt, detections_to_coco_results(image_ids[:9], detections[:9], category_ids),
                                 verbose=False)
    assert stats_only(partial) == stats_only(covering_all)
    assert partial["AR100"] < reference["AR100"]  # the 4 unseen images are misses


def _distributed_worker(rank: int, world_size: int, init_file: str, out_dir: str, rank_images: list) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        gt, category_ids, image_ids, detections = synthetic_detections()
        by_id = dict(zip(image_ids, detections))
        evaluator = CocoEvaluator(gt, category_ids, coco_eval="pycocotools")
        mine = rank_images[rank]
        for start in range(0, len(mine), 2):  # batches of 2
            batch = mine[start:start + 2]
            evaluator.update(batch, [by_id[i] for i in batch])
        metrics = evaluator.compute()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(metrics, handle)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_coco_evaluator_two_processes_match_single_process(tmp_path):
    gt, category_ids, image_ids, detections = synthetic_detections()
    single = evaluate_coco(gt, detections_to_coco_results(image_ids, detections, category_ids), verbose=False)

    # DistributedSampler(shuffle=False) over 13 -> 14 slots: rank r gets indices r, r+2, ...; the pad
    # repeats the first image, so image_ids[0] is scored by both ranks.
    padded = image_ids + image_ids[:1]
    rank_images = [padded[0::2], padded[1::2]]
    assert set(rank_images[0]) & set(rank_images[1]) == {image_ids[0]}

    torch.multiprocessing.spawn(
        _distributed_worker,
        args=(2, str(tmp_path / "rendezvous"), str(tmp_path), rank_images),
        nprocs=2,
        join=True,
    )
    expected = json.loads(json.dumps(single))
    for rank in (0, 1):
        metrics = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert metrics == expected, rank


# ------------------------------------------------------------------------------------------------
# tables and files
# ------------------------------------------------------------------------------------------------

def test_format_tables():
    per_class = {"zebra": 0.5, "apple": 0.25, "mango": None, "kiwi": 0.75}
    by_name = format_per_class_table(per_class).splitlines()
    assert [line.split()[0] for line in by_name[2:]] == ["apple", "kiwi", "mango", "zebra"]
    assert by_name[4].split() == ["mango", "-"]
    by_ap = format_per_class_table(per_class, sort_by="ap").splitlines()
    assert [line.split()[0] for line in by_ap[2:]] == ["kiwi", "zebra", "apple", "mango"]
    assert len({len(line) for line in by_ap}) == 1  # aligned columns
    with pytest.raises(ValueError, match="sort_by"):
        format_per_class_table(per_class, sort_by="score")

    stats = {key: i / 100 for i, key in enumerate(STAT_KEYS)}
    lines = format_stats_table(stats).splitlines()
    assert [line.split()[0] for line in lines] == list(STAT_KEYS)
    assert lines[1].split()[:2] == ["AP50", "0.0100"]


def test_write_json_atomic_keeps_previous_file_on_failure(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"AP": 0.5})
    assert json.loads(path.read_text()) == {"AP": 0.5}

    with pytest.raises(TypeError):
        write_json_atomic(path, {"AP": object()})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"AP": float("nan")})  # strict JSON
    assert json.loads(path.read_text()) == {"AP": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary files left

    write_json_atomic(tmp_path / "new" / "dir" / "m.json", [1, 2])
    assert json.loads((tmp_path / "new" / "dir" / "m.json").read_text()) == [1, 2]


def test_save_metrics_round_trip(tmp_path):
    stats = {key: 0.25 for key in STAT_KEYS}
    stats["APs"] = -1.0
    stats["per_class"] = {"cat": np.float64(0.5), "dog": None, "bird": float("nan")}
    save_metrics(tmp_path / "metrics.json", stats, extra={"epoch": 3})
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded["APs"] == -1.0 and loaded["AP"] == 0.25 and loaded["epoch"] == 3
    assert loaded["per_class"] == {"cat": 0.5, "dog": None, "bird": None}


def test_benchmark_returns_positive_seconds():
    seconds = benchmark_coco_eval(num_images=5, dets_per_image=5, backend="faster_coco_eval", repeats=1)
    assert isinstance(seconds, float) and seconds > 0.0


def test_the_error_analysis_scores_dense_images_with_the_same_max_dets():
    from effdet.evaluation.analysis.errors import error_breakdown
    from effdet.evaluation.cocoeval import evaluate_results

    gt = dense_image()
    results = [dict(r, score=1.0 - 0.001 * i) for i, r in enumerate(gt_as_results(gt))]
    dense = evaluate_results(gt, results, max_dets=300)
    assert error_breakdown(dense.gt, dense.results, dense.evaluator)["ap50"] == pytest.approx(100.0)
    capped = evaluate_results(gt, results)
    assert error_breakdown(capped.gt, capped.results, capped.evaluator)["ap50"] < 50

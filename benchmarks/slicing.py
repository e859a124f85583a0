"""Sliced inference of large images: accuracy and speed of the whole-image pipeline, ours sliced, and SAHI.

    python tools/benchmark.py slicing --weights CKPT [--data DIR | --num-images 8] [--slice-size 256]
        [--overlap 0.2] [--merge nmm] [--merge-metric ios] [--merge-threshold 0.5] [--score-threshold 0.1]
        [--max-detections 1000] [--batch 8] [--sahi] [--big 12000] [--runs 2] [--threads 2] [--out runs/slicing]

On a set of large, crowded images (by default the generated ``aerial`` kind: ``tools/make_demo_data.py --kind
aerial``, validation split only) it scores, with COCO AP at ``max(100, --max-detections)`` detections per image:

* the whole-image pipeline (each image letterboxed to the model's input, as without slicing);
* ours sliced (``eval.slice_size`` = ``--slice-size``, ``eval.slice_overlap``, ``eval.merge`` ...), in batches of
  ``--batch`` slices per forward;
* ours sliced with the whole image too (``eval.slice_full_image=true``);
* ours sliced, one slice per forward (``eval.slice_batch_size=1``): slices/s batched against unbatched;
* with ``--sahi``: SAHI's ``get_sliced_prediction`` (``sahi`` installed, or in ``.sahi/``: ``make sahi-env``) around
  the same Predictor (slicing off, so each call detects one slice), with the same slice size, overlap, merge,
  merge metric, threshold and score threshold, with and without the whole-image pass. SAHI's default
  ``batch_size=1`` (its base class runs a batch one image at a time unless a model overrides it).

Each row gives AP, AP50, APs, images/s and slices/s (medians of ``--runs`` passes over the images). With ``--big N``
a fresh process predicts one ``N x N`` image (an aerial validation image tiled to that size, saved as a PNG and read
back through ``Predictor.predict(path)``) sliced, and reports its time and peak memory (max RSS).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the checkout
SAHI_FOLDER = ROOT / ".sahi"  # make sahi-env: sahi and its few pure-python dependencies, outside our environment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="a checkpoint (.ckpt) of a model trained on such objects")
    parser.add_argument("--data", default=None, help="a COCO-layout folder (val/, annotations/instances_val.json); "
                        "default: generate the aerial kind under --out")
    parser.add_argument("--num-images", type=int, default=8, help="generated validation images (default 8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slice-size", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--merge", default="nmm", choices=["nms", "nmm"])
    parser.add_argument("--merge-metric", default="ios", choices=["iou", "ios"])
    parser.add_argument("--merge-threshold", type=float, default=0.5)
    parser.add_argument("--score-threshold", type=float, default=0.1)
    parser.add_argument("--max-detections", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8, help="slices per forward (eval.slice_batch_size)")
    parser.add_argument("--sahi", action="store_true", help="also run SAHI's get_sliced_prediction")
    parser.add_argument("--big", type=int, default=0, help="also predict one N x N image: time and peak memory")
    parser.add_argument("--runs", type=int, default=2, help="passes over the images (median time)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/slicing")


def _images(args: argparse.Namespace) -> tuple[list[np.ndarray], dict[str, Any]]:
    """RGB images and the COCO ground truth (dict) of the validation split."""
    from effdet.data.synthetic import make_synthetic_dataset
    from effdet.data.preprocess import load_image

    if args.data:
        root = Path(args.data)
        annotations, image_dir = root / "annotations" / "instances_val.json", root / "val"
    else:
        paths = make_synthetic_dataset("aerial", Path(args.out) / "data", num_train=0, num_val=args.num_images,
                                       seed=args.seed)
        annotations, image_dir = Path(paths["val_annotations"]), Path(paths["val_images"])
    ground_truth = json.loads(annotations.read_text())
    images = [load_image(image_dir / entry["file_name"]) for entry in ground_truth["images"]]  # RGB uint8
    return images, ground_truth


def _settings(args: argparse.Namespace, **changes: Any) -> dict[str, Any]:
    values = dict(score_threshold=args.score_threshold, max_detections=args.max_detections, nms="hard",
                  slice_size=args.slice_size, slice_overlap=args.overlap, merge=args.merge,
                  merge_metric=args.merge_metric, merge_threshold=args.merge_threshold, slice_batch_size=args.batch)
    values.update(changes)
    return values


def _predictor(weights: str, settings: dict[str, Any]) -> Any:
    from effdet.inference.predictor import Predictor

    return Predictor.from_checkpoint(weights, **settings)


def _measure(label: str, run: Callable[[np.ndarray], dict[str, Any]], images: list[np.ndarray],
             ground_truth: dict[str, Any], category_ids: Sequence[int], slices_per_pass: Optional[int],
             args: argparse.Namespace) -> dict[str, Any]:
    """AP of the first pass; median seconds over ``args.runs`` passes."""
    from effdet.evaluation.report import detections_to_coco_results, evaluate_coco

    times, detections = [], None
    for _ in range(max(1, args.runs)):
        start = time.perf_counter()
        found = [run(image) for image in images]
        times.append(time.perf_counter() - start)
        detections = detections or found
    image_ids = [entry["id"] for entry in ground_truth["images"]]
    metrics = evaluate_coco(ground_truth, detections_to_coco_results(image_ids, detections, category_ids),
                            verbose=False,
                            max_dets=args.max_detections)
    seconds = statistics.median(times)
    row = {"pipeline": label, "AP": metrics["AP"], "AP50": metrics["AP50"], "APs": metrics["APs"],
           "images_per_s": len(images) / seconds, "seconds": seconds, "max_dets": metrics.get("max_dets"),
           "detections": sum(len(d["scores"]) for d in detections)}
    if slices_per_pass:
        row["slices_per_s"] = slices_per_pass / seconds
    print(json.dumps(row), flush=True)
    return row


def _sahi_model(predictor: Any, score_threshold: float) -> Any:
    """Our Predictor (slicing off) as a SAHI detection model: SAHI cuts the slices, calls it on each one, shifts
    and merges the boxes."""
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction

    class PredictorModel(DetectionModel):
        def load_model(self) -> None:  # the model is given (set_model)
            raise RuntimeError("give the Predictor as model=")

        def set_model(self, model: Any, **kwargs: Any) -> None:
            self.model = model

        @property
        def num_categories(self) -> int:
            return len(self.model.class_names)

        @property
        def has_mask(self) -> bool:
            return False

        @property
        def category_names(self) -> list[str]:
            return list(self.model.class_names)

        def perform_inference(self, image: np.ndarray) -> None:
            self._original_predictions = self.model.predict_rgb([np.ascontiguousarray(image)])

        def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=[[0, 0]],
                                                                     full_shape_list=None) -> None:
            shift = shift_amount_list[0] if shift_amount_list and isinstance(shift_amount_list[0], list) \
                else (shift_amount_list or [0, 0])
            full_shape = full_shape_list[0] if full_shape_list and isinstance(full_shape_list[0], list) \
                else full_shape_list
            found = self._original_predictions[0]
            predictions = []
            for box, score, label in zip(found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist()):
                if score < self.confidence_threshold:
                    continue
                predictions.append(ObjectPrediction(bbox=box, category_id=int(label),
                                                    category_name=self.model.class_names[int(label)], score=score,
                                                    shift_amount=list(shift), full_shape=full_shape))
            self._object_prediction_list_per_image = [predictions]

    return PredictorModel(model=predictor, confidence_threshold=score_threshold,
                          category_mapping={str(i): n for i, n in enumerate(predictor.class_names)})


def _sahi_run(model: Any, args: argparse.Namespace, full_image: bool) -> Callable[[np.ndarray], dict[str, Any]]:
    from sahi.predict import get_sliced_prediction

    def run(image: np.ndarray) -> dict[str, Any]:
        result = get_sliced_prediction(
            image, model, slice_height=args.slice_size, slice_width=args.slice_size,
            overlap_height_ratio=args.overlap, overlap_width_ratio=args.overlap, perform_standard_pred=full_image,
            postprocess_type={"nmm": "GREEDYNMM", "nms": "NMS"}[args.merge],
            postprocess_match_metric=args.merge_metric.upper(), postprocess_match_threshold=args.merge_threshold,
            postprocess_class_agnostic=False, verbose=0)
        objects = result.object_prediction_list
        return {"boxes": np.asarray([o.bbox.to_xyxy() for o in objects], np.float32).reshape(-1, 4),
                "scores": np.asarray([o.score.value for o in objects], np.float32),
                "labels": np.asarray([o.category.id for o in objects], np.int64)}

    return run


def _slice_count(images: list[np.ndarray], args: argparse.Namespace) -> int:
    from effdet.ops.slicing import slice_grid

    return sum(len(slice_grid(image.shape[0], image.shape[1], args.slice_size, args.overlap)) for image in images)


def _big_image(args: argparse.Namespace, tile: np.ndarray) -> dict[str, Any]:
    """Predict one ``--big`` x ``--big`` image in a fresh process: seconds, detections and its peak RSS."""
    import cv2

    side = int(args.big)
    path = Path(args.out) / f"big_{side}.png"
    if not path.exists():
        reps = (-(-side // tile.shape[0]), -(-side // tile.shape[1]), 1)
        big = np.tile(tile, reps)[:side, :side]
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        del big
    code = ("import json, resource, sys, time, torch; torch.set_num_threads(%d)\n"
            "from effdet.inference.predictor import Predictor\n"
            "p = Predictor.from_checkpoint(%r, **json.loads(%r))\n"
            "t = time.perf_counter(); found = p.predict(%r)[0]; s = time.perf_counter() - t\n"
            "print('@@' + json.dumps({'seconds': s, 'detections': len(found['scores']), "
            "'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
            % (args.threads, str(args.weights), json.dumps(_settings(args)), str(path)))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True,
                          timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {side} x {side} prediction failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][2:])


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| pipeline | AP | AP50 | APs | images/s | slices/s | detections |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        slices = f"{row['slices_per_s']:.1f}" if "slices_per_s" in row else ""
        lines.append(f"| {row['pipeline']} | {row['AP']:.3f} | {row['AP50']:.3f} | {row['APs']:.3f} | "
                     f"{row['images_per_s']:.3f} | {slices} | {row['detections']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from effdet.benchmark.deploy import cpu_features

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, ground_truth = _images(args)
    sizes = [f"{image.shape[1]}x{image.shape[0]}" for image in images]
    print(f"CPU: {cpu_features()}; {args.threads} threads; {len(images)} images ({', '.join(sizes)}), "
          f"{len(ground_truth['annotations'])} objects", flush=True)
    slices = _slice_count(images, args)
    whole = _predictor(args.weights, _settings(args, slice_size=None))
    category_ids = whole.category_ids
    rows = [_measure("whole image (letterboxed to the input)", lambda im: whole.predict_rgb([im])[0], images,
                     ground_truth, category_ids, None, args)]
    sliced = _predictor(args.weights, _settings(args))
    rows.append(_measure(f"ours sliced, {args.batch} slices per forward", lambda im: sliced.predict_rgb([im])[0],
                         images, ground_truth, category_ids, slices, args))
    full = _predictor(args.weights, _settings(args, slice_full_image=True))
    rows.append(_measure("ours sliced + whole image", lambda im: full.predict_rgb([im])[0], images, ground_truth,
                         category_ids, slices + len(images), args))
    single = _predictor(args.weights, _settings(args, slice_batch_size=1))
    rows.append(_measure("ours sliced, 1 slice per forward", lambda im: single.predict_rgb([im])[0], images,
                         ground_truth, category_ids, slices, args))
    if args.sahi:
        if SAHI_FOLDER.is_dir() and str(SAHI_FOLDER) not in sys.path:
            sys.path.append(str(SAHI_FOLDER))
        import sahi

        model = _sahi_model(whole, args.score_threshold)
        rows.append(_measure(f"SAHI {sahi.__version__} get_sliced_prediction (1 slice per call)",
                             _sahi_run(model, args, False), images, ground_truth, category_ids, slices, args))
        rows.append(_measure("SAHI sliced + whole image", _sahi_run(model, args, True), images, ground_truth,
                             category_ids, slices + len(images), args))
    table = _table(rows)
    settings = (f"slice {args.slice_size} px, overlap {args.overlap}, merge {args.merge}/{args.merge_metric} "
                f"{args.merge_threshold}, score >= {args.score_threshold}, max {args.max_detections} detections "
                f"(COCO maxDets {max(100, args.max_detections)})")
    print(f"\n{settings}\n{table}", flush=True)
    report = {"settings": vars(args), "rows": rows, "cpu": cpu_features(), "images": sizes}
    if args.big:
        big = _big_image(args, images[0])
        report["big"] = big
        print(f"\n{args.big} x {args.big} image sliced ({args.slice_size} px, {args.batch} per forward): "
              f"{big['seconds']:.1f} s, {big['detections']} detections, peak RSS {big['peak_rss_mib']:.0f} MiB",
              flush=True)
    (out / "slicing.json").write_text(json.dumps(report, indent=1))
    (out / "slicing.md").write_text(f"{settings}\n\n{table}\n")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/benchmark.py slicing", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

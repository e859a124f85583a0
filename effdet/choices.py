"""Every closed list of choices, defined once; the training schema, the command-line tools' ``argparse``
and the Predictor import them from here. No imports: any module may use it."""
from __future__ import annotations

NMS_METHODS: tuple[str, ...] = ("soft", "hard")  # Gaussian soft-NMS (the official evaluation) | hard NMS
# Sliced inference (eval.merge, eval.merge_metric; effdet/ops/merge.py): how the detections of overlapping slices are
# merged: nms (greedy non-maximum suppression: the best box stays, the boxes it overlaps go) | nmm (greedy
# non-maximum merging: the best box absorbs the boxes it overlaps and becomes their enclosing box, with the best score);
# overlap as iou (intersection over union) | ios (intersection over the smaller box's area)
MERGE_METHODS: tuple[str, ...] = ("nms", "nmm")
MERGE_METRICS: tuple[str, ...] = ("iou", "ios")
COCO_EVALUATORS: tuple[str, ...] = ("pycocotools", "faster_coco_eval")  # COCO mAP implementations (eval.coco_eval)
EVAL_BACKENDS = COCO_EVALUATORS  # the old name, kept for one release
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant")
BOX_LOSSES: tuple[str, ...] = ("huber", "giou")
FUSION_METHODS: tuple[str, ...] = ("fast", "attn", "sum")  # BiFPN feature fusion
# what runs the network (effdet/inference/runtime_network.py); openvino-bf16: OpenVINO, float layers in bfloat16 (CPUs with bf16)
RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "openvino-bf16")
DATA_FORMATS: tuple[str, ...] = ("coco", "voc", "yolo")  # annotation formats train.py reads (effdet/data/formats.py)
ANCHOR_FIT_MODES: tuple[str, ...] = ("report", "apply", "off")  # start-up anchor check (effdet/engine/anchor_fit.py)
# EXIF orientation of images (effdet/imageinfo.py): apply (use them as displayed, as annotation tools and OpenCV's
# default reading show them) | ignore (the stored pixels, for data annotated on them)
EXIF_ORIENTATION_MODES: tuple[str, ...] = ("apply", "ignore")
# data.train_resize, the training crop's resampling (effdet/data/transforms.py RandomScaleCrop): area (INTER_AREA when
# shrinking, bilinear when enlarging, as inference) | random_filtered (antialiased bilinear or bicubic, one drawn per
# image, as the reference effdet's training resize)
TRAIN_RESIZE_MODES: tuple[str, ...] = ("area", "random_filtered")
# trainer.precision: the precisions that keep the weights (and the EMA) in float32; the short aliases mean the mixed
# forms. "*-true" half precision casts the weights, where a 0.9998 EMA update is lost.
TRAINING_PRECISIONS: tuple[str, ...] = ("32-true", "bf16-mixed", "16-mixed")
PRECISION_ALIASES: dict[str, str] = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}
# Values of ours that the runner resolves at start-up (effdet.engine.runner.resolve_trainer_settings) and logs:
# trainer.precision=auto -> bf16-mixed where the accelerator supports it, else 16-mixed on CUDA, else 32-true;
# trainer.sync_batchnorm=auto -> on when the per-device batch (data.batch_size) is below SYNC_BATCHNORM_BELOW.
AUTO: str = "auto"
SYNC_BATCHNORM_BELOW: int = 8

__all__ = ["ANCHOR_FIT_MODES", "BOX_LOSSES", "COCO_EVALUATORS", "DATA_FORMATS", "EVAL_BACKENDS", "EXIF_ORIENTATION_MODES", "TRAIN_RESIZE_MODES", "FUSION_METHODS", "LR_SCHEDULES", "MERGE_METHODS", "MERGE_METRICS", "NMS_METHODS", "OPTIMIZERS", "PRECISION_ALIASES", "RUNTIMES",
           "TRAINING_PRECISIONS", "AUTO", "SYNC_BATCHNORM_BELOW"]

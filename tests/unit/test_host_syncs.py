"""Host↔device synchronisations in the training step and in soft-NMS, counted by operation on the CPU
(effdet.engine.host_syncs.HostSyncCounter). Budgets: 0 in the matcher, the loss and the EMA; at most 1 per optimiser step
in the whole training step; at most 2 per image in soft-NMS."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import effdet
from effdet.engine.host_syncs import HostSyncCounter

ROOT = Path(__file__).resolve().parents[2]


def test_the_counter_sees_every_kind_of_synchronising_operation():
    x = torch.randn(6)
    mask = x > 0
    with HostSyncCounter() as syncs:
        float(x.sum())
        bool(mask.any())
        x[mask]
        x.nonzero()
        torch.unique(x)
        x.masked_select(mask)
        y = x.clone()
        y[mask] = 0.0
        x + 1  # not a sync
        x[torch.tensor([0, 2])]  # integer indexing is not a sync
    assert syncs.total == 7, syncs.report()
    assert syncs.by_op["index (bool index)"] == 1 and syncs.by_op["index_put_ (bool index)"] == 1
    assert syncs.by_op["nonzero"] == 1 and syncs.by_op["masked_select"] == 1
    assert all(place.startswith("tests/unit/test_host_syncs.py:") for place in syncs.where)  # the lines that ran them


def _batch(images: int = 2, boxes: int = 5, size: int = 128, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(images, boxes, 2, generator=generator) * size * 0.7
    sides = torch.rand(images, boxes, 2, generator=generator) * size * 0.3 + 4
    labels = torch.randint(0, 3, (images, boxes), generator=generator)
    labels[0, -2:] = -1  # padding rows
    return {"boxes": torch.cat([corners, corners + sides], -1), "labels": labels,
            "crowd_boxes": torch.tensor([[[0.0, 0.0, 40.0, 40.0]]] * images),
            "crowd_mask": torch.ones(images, 1, dtype=torch.bool)}


@pytest.mark.parametrize("box_loss", ["huber", "giou"])
def test_matcher_and_loss_never_wait_for_the_device(box_loss):
    from effdet.modeling.assign import AnchorMatcher
    from effdet.modeling.anchors import anchors_for
    from effdet.modeling.loss import DetectionLoss

    model = effdet.create_model("efficientdet_lite0", num_classes=3, image_size=128)
    anchors = anchors_for(model.config, (128, 128), torch.device("cpu"))
    batch = _batch()
    class_outputs, box_outputs = model(torch.randn(2, 3, 128, 128))
    criterion = DetectionLoss(3, box_loss_type=box_loss)
    with HostSyncCounter() as syncs:
        targets = AnchorMatcher(0.5, 0.4)(anchors, batch["boxes"], batch["labels"], batch["crowd_boxes"],
                                          batch["crowd_mask"])
        losses = criterion(class_outputs, box_outputs, *targets, anchors)
        losses["loss"].backward()
    assert int(targets[2].sum()) > 0  # there were positives (read after counting)
    assert syncs.total == 0, syncs.report()


@pytest.mark.slow
def test_a_training_step_waits_for_the_device_at_most_once(tmp_path):
    """A real fit (the run's own Trainer set-up, EMA on, the COCO recipes' SGD) counted from the start to the end of
    each training batch: the step's one sync is the decision to skip a non-finite step. (AdamW on the CPU reads its
    step counts on the host inside torch; on accelerators the module asks for ``capturable=True``, which keeps them
    on the device: not testable here.)"""
    optimizer = "sgd"
    import lightning as L

    from effdet.engine import runner
    from effdet.data import make_demo_dataset
    from effdet.engine.schema import load_train_config, resolve_model_config
    from effdet.engine.datamodule import DetectionDataModule
    from effdet.engine.module import DetectionModule

    make_demo_dataset(tmp_path / "data", num_train=8, num_val=2, seed=1)
    cfg = load_train_config(str(ROOT / "configs" / "demo.yaml"), [
        f"data.root={tmp_path / 'data'}", f"output_dir={tmp_path / 'run'}", "model.image_size=128",
        "model.pretrained_backbone=null", "model.drop_path_rate=0.2", "data.batch_size=4", "data.num_workers=0",
        f"optim.name={optimizer}", "trainer.max_steps=3", "trainer.max_epochs=-1", "eval.every_n_epochs=1000",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"])
    provisional = resolve_model_config(cfg.model, num_classes=1)
    datamodule = DetectionDataModule(cfg.data, provisional.image_size, provisional.mean, seed=cfg.seed)
    module = DetectionModule(cfg, datamodule.class_names, datamodule.category_ids)
    counts: list[int] = []
    reports: list[str] = []

    class Count(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.counter = HostSyncCounter()
            self.counter.__enter__()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.counter.__exit__(None, None, None)
            counts.append(self.counter.total)
            reports.append(self.counter.report())

    trainer = runner.build_trainer(cfg, tmp_path / "run", logger=False)
    trainer.callbacks.append(Count())
    trainer.fit(module, datamodule=datamodule)
    assert len(counts) == 3 and module.ema.updates == 3
    assert max(counts) <= 1, "\n".join(reports)


def test_soft_nms_waits_for_the_device_at_most_twice_per_image():
    """Batched over images: the rounds run on the device; one read of how many selections each image kept."""
    from effdet.ops.nms import postprocess

    torch.manual_seed(0)
    model = effdet.create_model("efficientdet_lite0", num_classes=3, image_size=128).eval()
    with torch.no_grad():
        class_outputs, box_outputs = model(torch.randn(4, 3, 128, 128))
    from effdet.modeling.anchors import anchors_for

    anchors = anchors_for(model.config, (128, 128), torch.device("cpu"))
    from effdet.ops.nms import _soft_nms_images, soft_nms_batched

    candidates = [(torch.rand(n, 2).repeat(1, 2) * 100 + torch.tensor([0.0, 0.0, 20.0, 20.0]), torch.rand(n),
                   torch.randint(0, 3, (n,))) for n in (300, 120, 0, 57)]
    with HostSyncCounter() as rounds:
        boxes = torch.stack([torch.nn.functional.pad(b, (0, 0, 0, 300 - len(b))) for b, _, _ in candidates])
        scores = torch.stack([torch.nn.functional.pad(s, (0, 300 - len(s)), value=-1.0) for _, s, _ in candidates])
        classes = torch.stack([torch.nn.functional.pad(c, (0, 300 - len(c))) for _, _, c in candidates])
        soft_nms_batched(boxes, scores, classes, max_detections=100)
    assert rounds.total == 0, rounds.report()
    with HostSyncCounter() as batch:
        results = _soft_nms_images(candidates, 0.5, 0.001, 100)
    assert batch.total <= 2 * len(candidates), batch.report()
    assert [len(r["scores"]) for r in results][2] == 0 and len(results[0]["scores"]) == 100
    detections = postprocess(class_outputs, box_outputs, anchors, nms_method="soft", pre_nms_top_k=1000)
    assert len(detections) == 4 and all(len(d["scores"]) == 100 for d in detections)

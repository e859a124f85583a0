"""Interruption safety and determinism of real tools/train.py runs.

One reference run (about 22 steps: 24 images, batch 2, 2 epochs, with scale jitter, flips and drop-path) is compared
with: a second identical run (determinism), a run killed with SIGKILL mid-epoch and started again, a run
stopped with SIGTERM and started again. Resumed runs must end with the reference's weights.
"""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import max_difference, start_and_wait_for_checkpoint, step_of, train_env

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 2


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from effdet.data import make_demo_dataset

    root = tmp_path_factory.mktemp("resume_data")
    make_demo_dataset(root, num_train=24, num_val=4, seed=5)  # >= 20 steps in 2 epochs
    return str(root)


def _command(data_root, out, **extra):
    values = {"data.root": data_root, "output_dir": out, "model.image_size": 128, "model.pretrained_backbone": "null",
              "model.drop_path_rate": 0.1, "data.batch_size": 2, "data.num_workers": 0, "trainer.max_epochs": EPOCHS,
              "trainer.deterministic": "true", "trainer.log_every_n_steps": 1, "trainer.enable_progress_bar": "false",
              "trainer.enable_model_summary": "false", "checkpoint.every_n_steps": 3, "seed": 7}
    values.update(extra)
    return [sys.executable, str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / "demo.yaml"),
            *[f"{k}={v}" for k, v in values.items()]]


def _run(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=3000, env=train_env(), cwd=str(ROOT))
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _losses(out: Path) -> list[tuple[int, float]]:
    rows = (out / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col, step = header.index("train/loss"), header.index("step")
    return [(int(r.split(",")[step]), float(r.split(",")[col])) for r in rows[1:] if r.split(",")[col]]


def _final_state(out: Path, steps: int) -> dict:
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == steps and ckpt["epoch"] == EPOCHS - 1
    return ckpt["state_dict"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("reference") / "run"
    _run(_command(data_root, out))
    return out


def _total_steps(reference: Path) -> int:
    # images without objects are left out of training by the dataset, so count the steps the reference made
    return step_of(reference / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_seeded_deterministic_runs_are_identical(tmp_path, data_root, reference_run):
    """seed + trainer.deterministic=true: the same losses step by step and the same metrics.json."""
    again = tmp_path / "again"
    _run(_command(data_root, again))
    first, second = _losses(reference_run), _losses(again)
    assert len(first) >= 20 and [s for s, _ in first[:20]] == list(range(20))
    assert first[:20] == second[:20]  # exact float equality
    metrics = [json.loads((out / "metrics.json").read_text()) for out in (reference_run, again)]
    for m in metrics:
        m.pop("checkpoint")  # the path of best.ckpt, inside each run's own directory
    assert metrics[0] == metrics[1]
    steps = _total_steps(reference_run)
    assert max_difference(_final_state(reference_run, steps), _final_state(again, steps)) == 0.0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, data_root, reference_run):
    """SIGKILL right after the first mid-epoch checkpoint (checkpoint.every_n_steps=3), then the same command:
    it resumes from that step and ends with the uninterrupted run's weights (here with a loader worker, which
    must not matter: order and augmentation are functions of (seed, epoch, image))."""
    out = tmp_path / "run"
    command = _command(data_root, out, **{"data.num_workers": 1})
    process = start_and_wait_for_checkpoint(command, out, min_step=3)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    step, total = step_of(out / "checkpoints" / "last.ckpt"), _total_steps(reference_run)
    assert 0 < step < total and step % (total // EPOCHS) != 0, step  # killed mid-epoch

    resumed = _run(command)
    log = resumed.stdout + resumed.stderr
    assert f"global step {step}" in log and "resuming from" in log
    difference = max_difference(_final_state(reference_run, total), _final_state(out, total))
    print(f"killed at step {step}; max |resumed - uninterrupted| = {difference:.3g}")
    assert difference <= 1e-6


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_and_resumes(tmp_path, data_root, reference_run):
    """SIGTERM: last.ckpt is written at the next batch boundary, the process exits with 143 without a traceback;
    the same command resumes from that step and ends with the uninterrupted run's weights."""
    out = tmp_path / "run"
    command = _command(data_root, out)
    process = start_and_wait_for_checkpoint(command, out, min_step=3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=1800)
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    step = step_of(out / "checkpoints" / "last.ckpt")
    assert f"SIGTERM: saved {out / 'checkpoints' / 'last.ckpt'} at epoch" in stderr
    total = _total_steps(reference_run)
    assert f"global step {step};" in stderr and 3 <= step < total
    print(f"SIGTERM checkpoint at global step {step}")

    resumed = _run(command)
    assert f"global step {step}" in resumed.stdout + resumed.stderr
    difference = max_difference(_final_state(reference_run, total), _final_state(out, total))
    print(f"max |resumed after SIGTERM - uninterrupted| = {difference:.3g}")
    assert difference <= 1e-6


def test_epoch_sampler_resumes_inside_its_epoch_only():
    """resume_at(e, k): every pass over epoch e starts k batches in (Lightning may create the iterator twice),
    the next epoch is whole again, and two ranks share each epoch without overlap."""
    from effdet.data.resumable import EpochSampler

    data = list(range(10))
    whole = list(EpochSampler(data, batch_size=2, seed=3))
    sampler = EpochSampler(data, batch_size=2, seed=3)
    sampler.resume_at(0, 2)
    assert list(sampler) == whole[4:] and list(sampler) == whole[4:]
    sampler.set_epoch(1)
    next_epoch = list(sampler)
    assert len(next_epoch) == 10 and {e for e, _ in next_epoch} == {1}
    assert [i for _, i in next_epoch] != [i for _, i in whole]  # reshuffled per epoch
    ranks = [list(EpochSampler(data, batch_size=2, num_replicas=2, rank=r, seed=3)) for r in (0, 1)]
    assert sorted(i for part in ranks for _, i in part) == data


def test_data_module_position_survives_a_checkpoint(tmp_path):
    """The data module's state_dict (what Lightning writes into every checkpoint) hands a new data module the
    position, and its training loader starts there."""
    from effdet.data import make_demo_dataset
    from effdet.engine.schema import load_train_config
    from effdet.engine.datamodule import DetectionDataModule

    make_demo_dataset(tmp_path, num_train=8, num_val=2, seed=1)
    cfg = load_train_config(str(ROOT / "configs" / "demo.yaml"), [f"data.root={tmp_path}", "data.num_workers=0",
                                                                   "data.batch_size=2"])
    first = DetectionDataModule(cfg.data, [64, 64], [0.5, 0.5, 0.5], seed=4)
    keys = list(first.train_dataloader().sampler)
    assert first.state_dict() == {"train_epoch": 0, "train_batches_done": 0}
    second = DetectionDataModule(cfg.data, [64, 64], [0.5, 0.5, 0.5], seed=4)
    second.load_state_dict({"train_epoch": 0, "train_batches_done": 2})
    loader = second.train_dataloader()
    assert list(loader.sampler) == keys[4:]
    batch = next(iter(loader))
    assert batch["images"].shape[0] == 2


# ------------------------------------------------------------------ last.ckpt holds the last step


def _steps_per_epoch(annotations: Path, batch_size: int) -> int:
    """Optimiser steps in one epoch with one process, from the annotation file alone: every listed image trains
    (images without objects are negatives), and the loader drops the last partial batch when an epoch holds more
    than one batch."""
    images = len(json.loads(annotations.read_text())["images"])
    return images // batch_size if images > batch_size else 1


@pytest.mark.slow
@pytest.mark.parametrize("every_n_steps,max_steps", [(0, -1), (3, -1), (3, 7)])
def test_last_checkpoint_holds_the_last_step(tmp_path, monkeypatch, every_n_steps, max_steps):
    """last.ckpt holds the true last step at the end of every epoch (validated or not: eval.every_n_epochs=2),
    every N optimiser steps (N=3 does not divide the 5-step epoch), and at the end of training (max_steps=7 stops
    mid-epoch). Observed from inside a real run: before each training batch, last.ckpt must hold the latest of the
    last epoch end and the last multiple of N. A finished run started again trains no further step."""
    import lightning as L

    from effdet.engine import runner
    from effdet.data import make_demo_dataset
    from effdet.engine.schema import load_train_config

    data = tmp_path / "data"
    make_demo_dataset(data, num_train=11, num_val=2, seed=3)
    batch_size, epochs = 2, 3
    per_epoch = _steps_per_epoch(data / "annotations" / "instances_train.json", batch_size)
    assert per_epoch == 5 and per_epoch % 3 != 0
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    cfg = load_train_config(str(ROOT / "configs" / "demo.yaml"), [
        f"data.root={data}", f"output_dir={out}", "model.image_size=128", "model.pretrained_backbone=null",
        f"data.batch_size={batch_size}", "data.num_workers=0", f"trainer.max_epochs={epochs}",
        f"trainer.max_steps={max_steps}", "eval.every_n_epochs=2", "eval.plots=false",
        f"checkpoint.every_n_steps={every_n_steps}", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "seed=3"])
    seen: list[tuple[int, int]] = []

    class Observer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.global_step, step_of(last) if last.exists() else 0))

    build_trainer = runner.build_trainer

    def with_observer(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        trainer.callbacks.append(Observer())
        return trainer

    monkeypatch.setattr(runner, "build_trainer", with_observer)
    runner.train(cfg)
    total = epochs * per_epoch if max_steps < 0 else max_steps
    assert [step for step, _ in seen] == list(range(total))
    for step, saved in seen:
        expected = max(per_epoch * (step // per_epoch), every_n_steps * (step // every_n_steps) if every_n_steps else 0)
        assert saved == expected, (step, saved, expected, seen)
    assert step_of(last) == total
    assert torch.load(last, weights_only=True, mmap=True)["epoch"] == (total - 1) // per_epoch

    seen.clear()
    runner.train(cfg)  # the same command again: resumes from the finished run's last.ckpt, trains nothing
    assert seen == [] and step_of(last) == total

"""Training with several processes (CPU, gloo): a real DDP fit through tools/train.py, ranks that agree with
each other and with one process on the same global batch, two "nodes" on localhost, EMA and the non-finite
skip across ranks, EMA under gradient accumulation."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "demo.yaml")


def _overrides(data_root, **extra):
    """Lite0 at 128 px from scratch on the tiny demo set, no loader workers, no progress bar."""
    values = {"data.root": data_root, "model.image_size": 128, "model.pretrained_backbone": "null",
              "data.num_workers": 0, "trainer.max_epochs": 1, "trainer.enable_progress_bar": "false",
              "trainer.enable_model_summary": "false", "trainer.accelerator": "cpu"}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _run(args, timeout=3000, **env):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=_env(**env),
                          cwd=str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from effdet.data import make_demo_dataset

    root = tmp_path_factory.mktemp("ddp_data")
    make_demo_dataset(root, num_train=8, num_val=4, seed=3)
    return str(root)


@pytest.mark.slow
def test_ddp_fit_two_processes_through_train_tool(tmp_path, tiny_data):
    """(a) `trainer.strategy=ddp trainer.devices=2` fits, validates best.ckpt and writes the run directory;
    the learning rate is scaled by the global batch (2 processes x 2 images x 2 accumulated)."""
    out = tmp_path / "run"
    result = _run([str(ROOT / "tools" / "train.py"), DEMO, *_overrides(tiny_data, **{
        "output_dir": out, "data.batch_size": 2, "trainer.devices": 2, "trainer.strategy": "ddp",
        "trainer.accumulate_grad_batches": 2, "trainer.log_every_n_steps": 1, "optim.lr": 0.004,
        "optim.lr_batch_size": 4, "optim.warmup_epochs": 0, "optim.schedule": "constant"})],
        MASTER_PORT=str(_free_port()))
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"AP", "AP50", "AR100", "per_class"} <= set(metrics)
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    # 8 images / (2 ranks x 2 per batch) = 2 batches per rank = 1 optimiser step of 2 accumulated batches
    assert ckpt["global_step"] == 1
    assert int(ckpt["state_dict"]["ema.n_averaged"]) == 1
    rows = (out / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    lrs = {float(r.split(",")[header.index("train/lr")]) for r in rows[1:] if r.split(",")[header.index("train/lr")]}
    assert len(lrs) == 1 and lrs.pop() == pytest.approx(0.004 * (2 * 2 * 2) / 4)  # lr x global batch / lr_batch_size


@pytest.mark.slow
def test_ddp_spawn_fit_through_train_tool(tmp_path, tiny_data):
    """`trainer.strategy=ddp_spawn`: the module, its EMA and the config pickle into the spawned processes; the fit
    finishes and the final validation (run again in the launching process) writes metrics.json."""
    out = tmp_path / "run"
    result = _run([str(ROOT / "tools" / "train.py"), DEMO, *_overrides(tiny_data, **{
        "output_dir": out, "data.batch_size": 2, "trainer.devices": 2, "trainer.strategy": "ddp_spawn"})],
        MASTER_PORT=str(_free_port()))
    assert result.returncode == 0, result.stderr[-4000:]
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2  # 8 images / (2 processes x 2 per batch)
    assert int(ckpt["state_dict"]["ema.n_averaged"]) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["AP50"] <= 1.0 and set(metrics["per_class"]) == {"circle", "square", "triangle"}


@pytest.mark.slow
def test_ddp_ranks_agree_and_match_one_process(tmp_path, tiny_data):
    """(b) After 3 steps the weights of both ranks are identical and have moved; with batch statistics shared
    and no random augmentation they equal one process on the same global batch (2 x 2 vs 1 x 4 images), to
    1e-4. That needs the loss normalised by the positives of the global batch (the ranks' images hold
    different numbers of objects). torch allows sync_batchnorm under DDP on GPUs only ("SyncBatchNorm layers
    only work with GPU modules"), so on CPU the batch norms are frozen (optim.freeze_bn) instead.
    A NaN loss on one rank at step 1 makes every rank skip that step (the one-process run skips it too)."""
    common = dict(**{"trainer.max_steps": 3, "trainer.max_epochs": -1, "optim.freeze_bn": "true",
                     "data.scale_range": "[1.0,1.0]", "data.hflip": 0.0, "optim.name": "sgd", "optim.lr": 0.01,
                     "optim.warmup_epochs": 0, "optim.schedule": "constant", "eval.every_n_epochs": 100})
    two = tmp_path / "two"
    result = _run([str(ROOT / "tests" / "helpers" / "ddp_fit.py"), str(two), DEMO, *_overrides(tiny_data, **common, **{
        "data.batch_size": 2, "trainer.devices": 2, "trainer.strategy": "ddp"})],
        EFFDET_TEST_NAN_STEP="1", MASTER_PORT=str(_free_port()))
    assert result.returncode == 0, result.stderr[-4000:]
    one = tmp_path / "one"
    result = _run([str(ROOT / "tests" / "helpers" / "ddp_fit.py"), str(one), DEMO, *_overrides(tiny_data, **common, **{
        "data.batch_size": 4, "trainer.devices": 1})], EFFDET_TEST_NAN_STEP="1")
    assert result.returncode == 0, result.stderr[-4000:]

    rank0, rank1 = torch.load(two / "rank0.pt"), torch.load(two / "rank1.pt")
    single = torch.load(one / "rank0.pt")
    assert rank0["world_size"] == 2 and single["world_size"] == 1
    assert rank0["global_step"] == rank1["global_step"] == single["global_step"] == 3
    assert rank0["nonfinite_steps"] == rank1["nonfinite_steps"] == single["nonfinite_steps"] == 1
    assert rank0["ema_updates"] == rank1["ema_updates"] == single["ema_updates"] == 2  # not the skipped step
    for key, value in rank0["end"].items():
        assert torch.equal(value, rank1["end"][key]), key  # DDP keeps the ranks bitwise equal
    moved = max(float((rank0["end"][k].float() - rank0["start"][k].float()).abs().max()) for k in rank0["end"])
    assert moved > 1e-3
    diff = max(float((rank0["end"][k].float() - single["end"][k].float()).abs().max()) for k in rank0["end"]
               if rank0["end"][k].is_floating_point())
    print(f"max |weights(2 processes) - weights(1 process)| after 3 steps = {diff:.3g}")
    assert diff < 1e-4


@pytest.mark.slow
def test_two_nodes_on_localhost(tmp_path, tiny_data):
    """(c) `trainer.num_nodes=2`, one process per "node", launched the way a cluster does it: the same command on
    each node with MASTER_ADDR/MASTER_PORT and NODE_RANK set (Lightning's environment variables)."""
    out = tmp_path / "run"
    args = [sys.executable, str(ROOT / "tools" / "train.py"), DEMO, *_overrides(tiny_data, **{
        "output_dir": out, "data.batch_size": 2, "trainer.devices": 1, "trainer.num_nodes": 2,
        "trainer.strategy": "ddp"})]
    port = str(_free_port())
    nodes = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
                              env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(rank)))
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=3000) for node in nodes]
    for node, (stdout, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1][1] + outputs[1][0]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2  # 8 images / (2 nodes x 2 per batch)
    assert "AP50" in json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_ema_updates_once_per_optimizer_step_under_accumulation(tmp_path, tiny_data):
    """4 batches with accumulate_grad_batches=2 are 2 optimiser steps: 2 EMA updates, not 4."""
    out = tmp_path / "acc"
    result = _run([str(ROOT / "tests" / "helpers" / "ddp_fit.py"), str(out), DEMO, *_overrides(tiny_data, **{
        "data.batch_size": 2, "trainer.devices": 1, "trainer.accumulate_grad_batches": 2,
        "eval.every_n_epochs": 100})])
    assert result.returncode == 0, result.stderr[-4000:]
    record = torch.load(out / "rank0.pt")
    assert record["global_step"] == 2 and record["ema_updates"] == 2


@pytest.mark.slow
def test_ranks_draw_their_own_random_streams_and_continue_them_across_a_resume(tmp_path, tiny_data):
    """2 gloo processes with drop-path: the ranks start from the same weights (a function of `seed`) but draw
    different drop-path masks; a run stopped at step 3 (inside the second epoch) and resumed draws, on each rank,
    the masks that the uninterrupted run drew at step 3 (every rank's generator state is saved and restored)."""
    common = {"data.batch_size": 2, "trainer.devices": 2, "trainer.strategy": "ddp", "model.drop_path_rate": 0.5,
              "eval.every_n_epochs": 100, "seed": 11, "trainer.max_epochs": 2}
    whole, split = tmp_path / "whole", tmp_path / "split"
    for out, stops in ((whole, [4]), (split, [3, 4])):
        for max_steps in stops:
            result = _run([str(ROOT / "tests" / "helpers" / "ddp_fit.py"), str(out), DEMO, *_overrides(tiny_data, **common, **{
                "trainer.max_steps": max_steps})], EFFDET_TEST_RECORD_MASKS="1", MASTER_PORT=str(_free_port()))
            assert result.returncode == 0, result.stderr[-4000:]
            if max_steps == 3:
                resumed = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
                assert resumed["global_step"] == 3
                (out / "rank0.pt").rename(out / "first0.pt")
                (out / "rank1.pt").rename(out / "first1.pt")
    ranks = [torch.load(whole / f"rank{r}.pt") for r in (0, 1)]
    for key, value in ranks[0]["start"].items():
        assert torch.equal(value, ranks[1]["start"][key]), key  # same initial weights on both ranks
    masks = [dict(record["masks"]) for record in ranks]
    assert sorted(masks[0]) == sorted(masks[1]) == [0, 1, 2, 3]
    assert any(not torch.equal(masks[0][s], masks[1][s]) for s in range(4)), "both ranks drew the same masks"
    for rank in (0, 1):
        first = dict(torch.load(split / f"first{rank}.pt")["masks"])
        second = dict(torch.load(split / f"rank{rank}.pt")["masks"])
        assert sorted(first) == [0, 1, 2] and sorted(second) == [3]
        for step in range(4):
            assert torch.equal({**first, **second}[step], masks[rank][step]), (rank, step)


@pytest.mark.slow
def test_sigterm_on_two_ranks_saves_every_rank_and_resumes(tmp_path, tiny_data):
    """SIGTERM to the launching process of a 2-process `tools/train.py` DDP fit (Lightning forwards it to the other
    rank and, from 2.5.2, broadcasts it from rank 0 at every step): both ranks stop at the same step, last.ckpt holds
    that step and both ranks' random states, the job exits with 143, and the same command finishes the run."""
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, str(ROOT / "tools" / "train.py"), DEMO, *_overrides(tiny_data, **{
        "output_dir": out, "data.batch_size": 1, "model.image_size": 256, "trainer.devices": 2,
        "trainer.strategy": "ddp", "trainer.max_epochs": 3, "checkpoint.every_n_steps": 1,
        "eval.every_n_epochs": 100})]
    port = str(_free_port())
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
                               env=_env(MASTER_PORT=port))
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 1800
    while time.time() < deadline and process.poll() is None:
        if last.exists() and torch.load(last, weights_only=True, mmap=True)["global_step"] >= 2:
            break
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()[1][-4000:]
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-KILL", "-f", str(out)])  # both ranks: the launcher and its child
        raise AssertionError("the ranks did not stop within 10 minutes of SIGTERM (a collective left waiting)")
    assert process.returncode == 143, stderr[-4000:]
    saved = torch.load(last, weights_only=True)
    step, total = saved["global_step"], 3 * 4  # 8 images / (2 ranks x 1 per batch) = 4 steps per epoch
    assert 2 <= step < total and "SIGTERM: saved" in stderr
    assert len(saved["effdet_rng_state"]["ranks"]) == 2

    resumed = _run(args[1:], MASTER_PORT=str(_free_port()))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"global step {step}" in resumed.stdout + resumed.stderr
    assert torch.load(last, weights_only=True)["global_step"] == total


class _Trainer:
    world_size, accumulate_grad_batches = 2, 2


def test_learning_rate_scales_with_world_size_and_accumulation(monkeypatch):
    from effdet.engine.schema import load_train_config
    from effdet.engine.module import DetectionModule

    keys = ["data.train.images=t", "data.train.annotations=t.json", "data.val.images=v", "data.val.annotations=v.json",
            "model.name=efficientdet_lite0", "model.image_size=128", "optim.ema_decay=null", "data.batch_size=2",
            "optim.lr=0.004", "optim.lr_batch_size=4"]
    module = DetectionModule(load_train_config(None, keys), ["a"], [1])
    assert module.scaled_lr() == pytest.approx(0.002)  # no trainer: 2 images of 4
    module._trainer = _Trainer()
    assert module.scaled_lr() == pytest.approx(0.004 * (2 * 2 * 2) / 4)  # batch 2 x 2 ranks x 2 accumulated

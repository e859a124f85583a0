"""The convergence benchmark's bookkeeping (benchmarks/convergence.py): epochs to reach the reference, the table, the
class-channel order of the reference's initial weights."""
from __future__ import annotations

import math

import pytest
import torch

from benchmarks.convergence import epochs_to_reach, format_table, summarize


def test_convergence_summary_reports_epochs_to_reach_the_reference():
    ours = [{"epoch": e, "AP": a, "AP50": a} for e, a in [(1, 0.1), (2, 0.3), (3, 0.5)]]
    reference = [{"epoch": e, "AP": a, "AP50": a} for e, a in [(1, 0.2), (2, 0.25), (3, 0.28)]]
    summary = summarize("x", ours, reference)
    assert summary["ours_epochs_to_reference_final"] == 2
    assert summary["reference_epochs_to_reference_final"] == 3
    assert epochs_to_reach(reference, 0.9) is None
    assert "| x | 0.500 / 0.500 | 0.280 / 0.280 | 2 / 3 |" in format_table([summary])
    assert math.isclose(summary["ours_final_AP"], 0.5)


def test_reference_init_reorders_class_channels_to_ours():
    """convergence --same-init: the reference labels classes in the annotation file's order, ours by sorted id;
    the class head's channels are anchor-major ([anchors, classes])."""
    from benchmarks.reference_train import permute_class_channels

    anchors, classes = 2, 3
    weight = torch.arange(anchors * classes, dtype=torch.float32).reshape(anchors * classes, 1, 1, 1)
    state = {"class_net.predict.conv_pw.weight": weight, "class_net.predict.conv_pw.bias": weight.flatten(),
             "box_net.predict.conv_pw.bias": torch.arange(4.0)}
    out = permute_class_channels(state, classes, order=[1, 2, 0])
    assert out["class_net.predict.conv_pw.weight"].flatten().tolist() == [1, 2, 0, 4, 5, 3]
    assert out["class_net.predict.conv_pw.bias"].tolist() == [1, 2, 0, 4, 5, 3]
    assert torch.equal(out["box_net.predict.conv_pw.bias"], state["box_net.predict.conv_pw.bias"])


def _result(kind, arm, seed, final, e8=None):
    return {"kind": kind, "arm": arm, "seed": seed, "final_AP": final, "AP_epoch8": e8}


def test_protocol_summary_statistics_per_arm():
    """convergence --seeds: per kind and arm, n / mean / sample std (ddof=1) / min / max of the final and epoch-8 AP;
    std is None for one seed, and seeds without an epoch-8 AP are left out of its statistics."""
    import statistics

    from benchmarks.protocol import summarize_protocol

    finals = [0.61, 0.58, 0.64]
    results = [_result("small", "ours", k, v, e8=0.3 + k / 10) for k, v in enumerate(finals)]
    results += [_result("small", "reference", 0, 0.62, e8=None), _result("similar", "ours", 4, 0.3, e8=0.1)]
    summary = summarize_protocol(results)["kinds"]
    ours = summary["small"]["arms"]["ours"]
    assert ours["seeds"] == [0, 1, 2] and ours["final_AP"]["n"] == 3
    assert math.isclose(ours["final_AP"]["mean"], statistics.mean(finals))
    assert math.isclose(ours["final_AP"]["std"], statistics.stdev(finals))
    assert (ours["final_AP"]["min"], ours["final_AP"]["max"]) == (0.58, 0.64)
    assert math.isclose(ours["AP_epoch8"]["mean"], 0.4) and math.isclose(ours["AP_epoch8"]["std"], 0.1)
    ref = summary["small"]["arms"]["reference"]
    assert ref["final_AP"] == {"n": 1, "mean": 0.62, "std": None, "min": 0.62, "max": 0.62}
    assert ref["AP_epoch8"] == {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    assert list(summary) == ["similar", "small"] and list(summary["similar"]["pairs"]) == []


def test_protocol_pairs_only_the_seeds_both_arms_have():
    """Paired differences a - b (arms in the ARMS table's order) use only the seeds both arms finished; the rule:
    |mean difference| > sample std of the differences (None for fewer than two pairs)."""
    import statistics

    from benchmarks.protocol import format_summary, paired, summarize_protocol

    ours = {0: 0.60, 1: 0.58, 2: 0.64, 3: 0.61}
    ref = {1: 0.55, 2: 0.60, 3: 0.57, 4: 0.70}  # seed 0 missing here, seed 4 missing in ours
    results = ([_result("small", "reference", k, v) for k, v in ref.items()]
               + [_result("small", "ours", k, v) for k, v in ours.items()])
    pair = summarize_protocol(results)["kinds"]["small"]["pairs"]
    assert list(pair) == ["ours - reference"]  # ARMS order, whatever the order of the results
    diff = pair["ours - reference"]["final_AP"]
    expected = [ours[k] - ref[k] for k in (1, 2, 3)]
    assert diff["seeds"] == [1, 2, 3] and diff["n"] == 3
    assert all(math.isclose(a, b) for a, b in zip(diff["differences"], expected))
    assert math.isclose(diff["mean"], statistics.mean(expected))
    assert math.isclose(diff["std"], statistics.stdev(expected))
    assert math.isclose(diff["min"], min(expected)) and math.isclose(diff["max"], max(expected))
    assert diff["exceeds_spread"] is True  # 0.0367 mean, 0.0058 std
    assert paired({0: 0.5, 1: 0.7}, {0: 0.6, 1: 0.5})["exceeds_spread"] is False  # +0.05 mean, 0.21 std
    assert paired({0: 0.5}, {0: 0.4, 1: 0.3})["exceeds_spread"] is None  # one common seed: no spread
    assert paired({0: 0.5, 1: None}, {0: 0.4, 1: 0.3})["seeds"] == [0]  # a missing epoch-8 AP is not paired
    assert paired({}, {1: 0.3})["n"] == 0
    table = format_summary(summarize_protocol(results))
    assert "| small | ours - reference | 3 | 1 2 3 | +0.037 ± 0.006 [+0.030, +0.040], yes | — |" in table


def test_protocol_sizes_per_kind():
    from benchmarks.convergence import kind_sizes, parse_sizes

    assert kind_sizes("small") == (200, 60) and kind_sizes("similar") == (400, 100)
    assert kind_sizes("similar", num_train=50) == (50, 100)
    assert kind_sizes("similar", parse_sizes(["similar=16/8"]), num_train=50) == (16, 8)
    with pytest.raises(ValueError):
        parse_sizes(["small=16"])


def test_protocol_runs_seed_by_seed_skips_finished_seeds_and_reports_failures(tmp_path, monkeypatch, capsys):
    """The protocol's bookkeeping with the trainings faked: one seed file per finished training, a failed seed
    leaves none (exit code 1, the others still run), a rerun trains only the missing seeds, other settings are
    refused."""
    import json

    from benchmarks import convergence, protocol

    trained = []

    class Done:
        def __init__(self, code):
            self.code = code

        def wait(self):
            return self.code

    def start_ours(root, out, epochs, seed, *args):
        trained.append(seed)
        return Done(1 if seed == 1 and trained.count(1) == 1 else 0)  # seed 1 fails the first time

    monkeypatch.setattr(protocol, "start_ours", start_ours)
    monkeypatch.setattr(protocol, "ours_curve", lambda out: [
        {"epoch": e, "AP": 0.1 * e + 0.01 * int(out.name[4:]), "AP50": 0.5} for e in (1, 2)])
    monkeypatch.setattr(convergence, "make_datasets", lambda kinds, out, *a, **k: [_tiny_set(out / "data" / "small")])
    monkeypatch.setattr(protocol, "make_datasets", convergence.make_datasets)
    out = tmp_path / "results"
    argv = ["--seeds", "3", "--arms", "ours", "--kinds", "small", "--epochs", "2", "--out", str(out)]
    assert convergence.main(argv) == 1
    assert trained == [0, 1, 2] and sorted(p.name for p in (out / "small" / "ours").iterdir()) == [
        "seed0.json", "seed2.json"]
    result = json.loads((out / "small" / "ours" / "seed2.json").read_text())
    assert math.isclose(result["final_AP"], 0.22) and result["AP_epoch8"] is None
    assert result["settings"]["seed"] == 2 and "seed=2" in result["settings"]["command"]
    assert json.loads((out / "summary.json").read_text())["kinds"]["small"]["arms"]["ours"]["final_AP"]["n"] == 2
    assert convergence.main(argv) == 0 and trained == [0, 1, 2, 1]  # only the missing seed
    assert "3 trainings, 2 already done, 1 to run" in capsys.readouterr().out
    assert convergence.main([*argv[:-4], "--epochs", "3", "--out", str(out)]) == 2 and trained == [0, 1, 2, 1]


def _fake_trainings(monkeypatch, commands):
    """The protocol's trainings faked: each records its overrides in ``commands``; AP = 0.1 epoch + 0.01 seed, plus
    0.05 when the training resamples with random_filtered."""
    from benchmarks import convergence, protocol

    class Done:
        def wait(self):
            return 0

    def start_ours(root, out, epochs, seed, config, overrides, *args):
        commands.append((seed, list(overrides)))
        (out / "filtered").write_text(str("data.train_resize=random_filtered" in overrides))
        return Done()

    def curve(out):
        bonus = 0.05 if (out / "filtered").read_text() == "True" else 0.0
        return [{"epoch": e, "AP": 0.1 * e + 0.01 * int(out.name[4:]) + bonus, "AP50": 0.5} for e in (1, 2)]

    monkeypatch.setattr(protocol, "start_ours", start_ours)
    monkeypatch.setattr(protocol, "ours_curve", curve)
    monkeypatch.setattr(convergence, "make_datasets", lambda kinds, out, *a, **k: [_tiny_set(out / "data" / "small")])
    monkeypatch.setattr(protocol, "make_datasets", convergence.make_datasets)


def test_protocol_variant_is_ours_plus_its_overrides_paired_with_ours(tmp_path, monkeypatch):
    """--variant NAME KEY=VALUE ...: an arm that runs ours plus those overrides (and only it gets them), in its own
    folder, paired seed by seed with ours in the summary."""
    import json

    from benchmarks import convergence

    commands = []
    _fake_trainings(monkeypatch, commands)
    out = tmp_path / "results"
    argv = ["--seeds", "2", "--kinds", "small", "--epochs", "2", "--out", str(out), "--arms", "ours", "filtered",
            "--variant", "filtered", "data.train_resize=random_filtered"]
    assert convergence.main(argv) == 0
    with_filter = [seed for seed, overrides in commands if "data.train_resize=random_filtered" in overrides]
    assert len(commands) == 4 and with_filter == [0, 1]
    stored = json.loads((out / "small" / "filtered" / "seed1.json").read_text())
    assert "data.train_resize=random_filtered" in stored["settings"]["command"]
    assert math.isclose(stored["final_AP"], 0.2 + 0.01 + 0.05)
    pair = json.loads((out / "summary.json").read_text())["kinds"]["small"]["pairs"]["ours - filtered"]["final_AP"]
    assert pair["seeds"] == [0, 1] and all(math.isclose(d, -0.05) for d in pair["differences"])
    # a variant run again under another definition, or an undefined one, is refused before any training
    commands.clear()
    assert convergence.main([*argv[:-1], "data.train_resize=area"]) == 2
    assert convergence.main(argv[:-3]) == 2 and commands == []


def test_protocol_recipe_variant_runs_the_reference_with_that_recipe_key(tmp_path, monkeypatch):
    """--variant NAME recipe.KEY=VALUE: the reference arm with that key of its recipe changed (the spec it trains
    from says so), recorded in the seed file and paired with the plain reference, which keeps RECIPE."""
    import json

    from benchmarks import convergence, protocol

    commands, specs = [], []
    _fake_trainings(monkeypatch, commands)

    class Done:
        def wait(self):
            return 0

    def start_reference(spec, folder, threads):
        specs.append(json.loads(spec.read_text()))
        return Done()

    monkeypatch.setattr(protocol, "reference_folder", lambda: tmp_path)
    monkeypatch.setattr(protocol, "reference_backbone_weights", lambda folder, work: tmp_path / "weights.pt")
    monkeypatch.setattr(protocol, "start_reference", start_reference)
    monkeypatch.setattr(protocol, "reference_curve", lambda work: [
        {"epoch": e, "AP": 0.1 * e + (0.03 if json.loads((work / "spec.json").read_text())["lr"] == 0.004 else 0.0),
         "AP50": 0.5} for e in (1, 2)])
    out = tmp_path / "results"
    argv = ["--seeds", "2", "--kinds", "small", "--epochs", "2", "--out", str(out), "--arms", "reference",
            "reference_lr4", "--variant", "reference_lr4", "recipe.lr=0.004"]
    assert convergence.RECIPE["lr"] != 0.004
    assert convergence.main(argv) == 0 and commands == []  # no run of ours
    assert sorted(spec["lr"] for spec in specs) == sorted([convergence.RECIPE["lr"]] * 2 + [0.004, 0.004])
    assert all(spec["warmup_epochs"] == 1 for spec in specs)  # only the named key changes
    stored = json.loads((out / "small" / "reference_lr4" / "seed1.json").read_text())
    assert stored["settings"]["program"] == "reference" and stored["settings"]["recipe"]["lr"] == 0.004
    pair = json.loads((out / "summary.json").read_text())["kinds"]["small"]["pairs"]
    assert all(math.isclose(d, -0.03) for d in pair["reference - reference_lr4"]["final_AP"]["differences"])


def test_a_recipe_variant_of_the_image_size_trains_and_records_that_size():
    """recipe.image_size is a recipe key like the others: the variant's spec and its settings both say the new size
    (the plain reference keeps RECIPE's), and --image-size applies to the arms that do not set it."""
    import argparse

    from benchmarks import convergence, protocol

    variants = {"reference_320": ("recipe.image_size=320",)}
    data = dict(name="small", num_train=2, num_val=1, data_seed=0)
    for given, plain in ((None, convergence.RECIPE["image_size"]), (192, 192)):
        args = argparse.Namespace(image_size=given, epochs=2, threads=1, workers=0, config=None)
        changed = protocol.arm_settings("reference_320", 0, data, args, [], variants)
        assert changed["image_size"] == changed["recipe"]["image_size"] == 320
        kept = protocol.arm_settings("reference", 0, data, args, [], variants)
        assert kept["image_size"] == kept["recipe"]["image_size"] == plain


@pytest.mark.parametrize("variant", [["ours", "data.hflip=false"], ["data", "data.hflip=false"], ["a/b", "x=1"],
                                     ["nokeys"], ["bad", "data.no_such_key=1"], ["bad", "data.train_resize=cubic"],
                                     ["bad", "recipe.no_such_key=1"], ["bad", "recipe.lr=0.004", "optim.lr=0.004"]])
def test_protocol_refuses_a_bad_variant_before_training(tmp_path, monkeypatch, capsys, variant):
    from benchmarks import convergence

    commands = []
    _fake_trainings(monkeypatch, commands)
    argv = ["--seeds", "1", "--kinds", "small", "--epochs", "2", "--out", str(tmp_path), "--variant", *variant]
    assert convergence.main(argv) == 2 and commands == []
    assert "error:" in capsys.readouterr().err


def test_protocol_refuses_results_of_other_code_defaults(tmp_path, monkeypatch):
    """A seed file whose resolved config differs (the code's defaults changed since: another config_digest) is not
    mixed in; one written before the digest was recorded is still read."""
    import json

    from benchmarks import convergence

    commands = []
    _fake_trainings(monkeypatch, commands)
    out = tmp_path / "results"
    argv = ["--seeds", "1", "--arms", "ours", "--kinds", "small", "--epochs", "2", "--out", str(out)]
    assert convergence.main(argv) == 0 and len(commands) == 1
    path = out / "small" / "ours" / "seed0.json"
    result = json.loads(path.read_text())
    result["settings"]["config_digest"] = "0" * 16
    path.write_text(json.dumps(result))
    assert convergence.main(argv) == 2 and len(commands) == 1
    del result["settings"]["config_digest"]
    path.write_text(json.dumps(result))
    assert convergence.main(argv) == 0 and len(commands) == 1


def _tiny_set(root):
    from effdet.data.synthetic import make_synthetic_dataset

    if not root.exists():
        make_synthetic_dataset("small", root, num_train=2, num_val=1, seed=0)
    return root


def test_the_shared_recipe_is_the_demo_config():
    """The reference trains with RECIPE and ours with configs/demo.yaml: the numbers they share must agree (a change
    of one without the other compared two recipes, docs/convergence.md parts 6-8)."""
    from benchmarks import convergence
    from effdet.engine.schema import load_train_config

    cfg = load_train_config(str(convergence.ROOT / "configs" / "demo.yaml"),
                            ["data.train.images=t", "data.train.annotations=t.json", "data.val.images=v",
                             "data.val.annotations=v.json"])
    ours = {"image_size": cfg.model.image_size, "batch_size": cfg.data.batch_size, "lr": cfg.optim.lr,
            "weight_decay": cfg.optim.weight_decay, "warmup_epochs": cfg.optim.warmup_epochs,
            "warmup_start_factor": cfg.optim.warmup_start_factor, "grad_clip": cfg.optim.grad_clip,
            "ema_decay": cfg.optim.ema_decay, "ema_warmup": cfg.optim.ema_warmup,
            "scale_range": list(cfg.data.scale_range), "hflip": cfg.data.hflip}
    assert {key: convergence.RECIPE[key] for key in ours} == ours
    assert cfg.optim.name == "adamw" and cfg.optim.lr_batch_size is None and cfg.optim.schedule == "cosine"

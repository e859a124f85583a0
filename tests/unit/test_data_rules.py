"""One rule, one place: CocoDetection reads, checks and judges a COCO file with the data checker's functions
(effdet.data.checks), so it refuses and drops exactly what tools/check_data.py reports."""
from __future__ import annotations

import json

import numpy as np
import pytest

from effdet.data import CocoDetection
from effdet.data.checks import check_dataset

from tests.unit.test_data import _ann, _dataset_files, _image  # tests/unit/test_data.py


def test_the_dataset_judges_boxes_by_the_checkers_rule(tmp_path):
    """One rule: what the dataset drops is what tools/check_data.py reports as dropped by training (box_invalid,
    box_nonpositive, box_outside, box_degenerate). The image is 64 x 48 (w x h)."""
    annotations = [
        _ann(1, 1, 1, [2, 3, 4, 5]),  # inside
        _ann(2, 1, 1, [60, 10, 10, 10]),  # 6 px past the right border: clipped (the checker warns)
        _ann(3, 1, 1, [10, 10, 54.5, 5]),  # 0.5 px past it: clipped, within the checker's 1 px tolerance
        _ann(4, 1, 1, [63.5, 5, 10, 10]),  # 0.5 px inside: degenerate once clipped
        _ann(5, 1, 1, [70, 5, 10, 10]),  # entirely outside
        _ann(6, 1, 1, [10, 10, 0, 5]),  # zero width
        _ann(7, 1, 1, [10, 10, "5", 5]),  # numeric text is a number
        _ann(8, 1, 1, [10, 10, True, 5]),  # a boolean is not (the dataset used to read True as 1)
        _ann(9, 1, 1, [1, 2, 3]),  # not 4 numbers
        _ann(10, 1, 1, [10, 10, float("nan"), 5]),  # not finite
        _ann(11, 1, 1, [30, 10, 50, 40]),  # overflows as xywh, fits as xyxy: training reads it as written (xywh)
    ]
    folder, json_path = _dataset_files(tmp_path, [_image(1, "a.jpg")], annotations)
    dataset = CocoDetection(folder, json_path)
    report = dataset.report
    assert report["invalid_boxes_examples"] == [6, 8, 9, 10]
    assert report["degenerate_boxes_examples"] == [4, 5]
    assert report["clipped_boxes_examples"] == [2, 3, 4, 5, 11]
    np.testing.assert_allclose(dataset[0]["boxes"], [[2, 3, 6, 8], [60, 10, 64, 20], [10, 10, 64, 15],
                                                     [10, 10, 15, 15], [30, 10, 64, 48]])

    checked = check_dataset(folder, json_path, level="fast")
    box_codes = {f.annotation_id: f.code for f in checked.findings if f.code.startswith("box")}
    assert box_codes == {2: "box_clipped", 4: "box_degenerate", 5: "box_outside", 6: "box_nonpositive",
                         8: "box_invalid", 9: "box_invalid", 10: "box_invalid", 11: "box_xyxy"}
    dropped_by_training = {i for i, code in box_codes.items()
                           if code in ("box_invalid", "box_nonpositive", "box_outside", "box_degenerate")}
    assert dropped_by_training == set(report["invalid_boxes_examples"] + report["degenerate_boxes_examples"])


@pytest.mark.parametrize("width, accepted", [(64, True), ("64", True), (64.7, True), (1, True), (0.5, False),
                                             (0, False), (-64, False), (True, False), ("wide", False), (None, False)])
def test_the_dataset_and_the_checker_share_the_image_size_rule(tmp_path, width, accepted):
    """width/height must be numbers of at least 1 px: the dataset refuses exactly what the checker calls
    bad_image_size (before, the dataset took int(width): True was 1 px, "64.7" refused, 0.5 refused while the checker
    passed it)."""
    folder, json_path = _dataset_files(tmp_path, [_image(1, "a.jpg")], [_ann(1, 1, 1, [1, 1, 5, 5])])
    data = json.loads(json_path.read_text())
    data["images"][0]["width"] = width
    json_path.write_text(json.dumps(data))
    codes = check_dataset(folder, json_path, level="fast").codes()
    assert (codes["bad_image_size"] == 0) is accepted
    if accepted:
        assert len(CocoDetection(folder, json_path)) == 1
    else:
        with pytest.raises(ValueError, match=r"image id 1 \('a.jpg'\) has invalid width/height"):
            CocoDetection(folder, json_path)


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        [1, 2],
        {"images": [], "categories": []},
        {"images": {}, "annotations": [], "categories": []},
        {"images": [7], "annotations": [], "categories": [{"id": 1, "name": "x"}]},
        {"images": [], "annotations": [{"id": 3, "image_id": 1}], "categories": [{"id": 1, "name": "x"}]},
        {"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}, {"id": 1, "name": "y"}]},
        {"images": [], "annotations": [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}] * 2,
         "categories": [{"id": 1, "name": "x"}]},
        {"images": [_image(1, "a.jpg")], "annotations": [{"id": 4, "image_id": 1, "category_id": 2,
                                                          "bbox": [0, 0, 1, 1]}],
         "categories": [{"id": 1, "name": "x"}]},
    ],
    ids=["not-json", "list", "no-annotations", "images-not-a-list", "image-not-an-object", "annotation-keys",
         "duplicate-category", "duplicate-annotation", "unknown-category"],
)
def test_the_dataset_refuses_a_file_with_the_checkers_first_fatal_finding(tmp_path, data):
    json_path = tmp_path / "broken.json"
    json_path.write_text(data if isinstance(data, str) else json.dumps(data))
    first = check_dataset(tmp_path, json_path, level="fast").of("fatal")[0]
    with pytest.raises(ValueError) as error:
        CocoDetection(tmp_path, json_path)
    assert str(error.value) == f"annotation file '{json_path}': {first.message}"

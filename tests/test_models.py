"""Networks, heads, configs and preprocessing checked against the originals' definitions.

The iResNet forward is compared with a functional transcription of insightface's forward
(F.conv2d / F.batch_norm / F.prelu on the state_dict), the heads with their formulas, and the
iResNet-50 key layout with the reference checkpoint layouts (no iResNet-50 forward is run).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from extract.checkpoints import random_model, randomize_
from extract.models import (
    ARCH_LAYERS,
    ConfigError,
    PFESigmaHead,
    ScalePredictor,
    available_model_configs,
    build_iresnet,
    load_model_config,
    model_config_from_dict,
)
from extract.models.heads import SCALE_ACTIVATIONS
from extract.preprocess import preprocess_batch

pytestmark = pytest.mark.torch

REFERENCE = Path("/work/shared/reference/checkpoint_layouts.json")


def _layout_of(sd: dict) -> dict:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in sd.items()}


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} not available")
    return json.loads(REFERENCE.read_text())


def test_iresnet50_state_dict_equals_insightface_layout(reference):
    """Keys (in order), shapes and dtypes of our iResNet-50 equal the model-zoo backbone.pth."""
    with torch.device("meta"):  # structure only
        sd = build_iresnet("iresnet50").state_dict()
    expected = reference["arcface_r50_backbone"]["layout"]
    assert list(sd) == list(expected)
    assert _layout_of(sd) == expected
    assert len(sd) == 475


def test_heads_state_dicts_equal_scaleface_repository_layout(reference):
    scale = ScalePredictor((25088, 512, 1), batch_norm=True, activation="sigm_mul")
    pfe = PFESigmaHead(25088, 512)
    assert _layout_of(scale.state_dict()) == reference["scaleface_r50"]["layout"]["scale_predictor"]
    assert _layout_of(pfe.state_dict()) == reference["pfe_r50"]["layout"]["head"]


@pytest.mark.parametrize("arch", sorted(ARCH_LAYERS))
def test_block_counts_per_architecture(arch):
    """Each stage has the insightface block count; only its first block has a downsample."""
    with torch.device("meta"):  # structure only, no allocation
        model = build_iresnet(arch)
    for stage, blocks in enumerate(ARCH_LAYERS[arch], start=1):
        layer = getattr(model, f"layer{stage}")
        assert len(layer) == blocks
        assert [b.downsample is not None for b in layer] == [True] + [False] * (blocks - 1)


def _reference_forward(sd: dict, x: torch.Tensor, layers, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """insightface IResNet.forward transcribed with functional ops over a state_dict (eval mode)."""

    def bn(t, p):
        return F.batch_norm(
            t,
            sd[p + ".running_mean"],
            sd[p + ".running_var"],
            sd.get(p + ".weight"),
            sd.get(p + ".bias"),
            training=False,
            eps=eps,
        )

    x = F.prelu(bn(F.conv2d(x, sd["conv1.weight"], padding=1), "bn1"), sd["prelu.weight"])
    for stage, blocks in enumerate(layers, start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            stride = 2 if b == 0 else 1
            out = F.conv2d(bn(x, p + ".bn1"), sd[p + ".conv1.weight"], padding=1)
            out = F.prelu(bn(out, p + ".bn2"), sd[p + ".prelu.weight"])
            out = bn(F.conv2d(out, sd[p + ".conv2.weight"], stride=stride, padding=1), p + ".bn3")
            if b == 0:
                identity = bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=2), p + ".downsample.1")
            else:
                identity = x
            x = out + identity
    flat = torch.flatten(bn(x, "bn2"), 1)
    emb = F.batch_norm(
        F.linear(flat, sd["fc.weight"], sd["fc.bias"]),
        sd["features.running_mean"],
        sd["features.running_var"],
        sd["features.weight"],
        sd["features.bias"],
        training=False,
        eps=eps,
    )
    return emb, flat


@pytest.fixture(scope="module")
def r18_images() -> torch.Tensor:
    return torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("eps", [1e-5, 2e-5])
def test_iresnet_forward_matches_functional_transcription(r18_images, eps):
    model = build_iresnet("iresnet18", bn_eps=eps).eval()
    randomize_(model, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = model(r18_images)
        emb, flat = _reference_forward(model.state_dict(), r18_images, ARCH_LAYERS["iresnet18"], eps)
    assert out.embedding.shape == (2, 512) and out.bottleneck.shape == (2, 25088)
    torch.testing.assert_close(out.bottleneck, flat, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.embedding, emb, rtol=1e-4, atol=1e-4)
    # The embedding is raw (not unit norm) and depends on eps (MagFace 2e-5 vs 1e-5).
    assert not torch.allclose(out.embedding.norm(dim=1), torch.ones(2))


def test_eps_changes_output_and_channels_last_does_not(r18_images):
    a = build_iresnet("iresnet18", bn_eps=1e-5).eval()
    randomize_(a, torch.Generator().manual_seed(3))
    b = build_iresnet("iresnet18", bn_eps=2e-5).eval()
    b.load_state_dict(a.state_dict())
    with torch.inference_mode():
        ref = a(r18_images).embedding
        assert not torch.equal(ref, b(r18_images).embedding)
        a_cl = a.to(memory_format=torch.channels_last)
        got = a_cl(r18_images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got.embedding, ref, rtol=1e-4, atol=1e-4)


def test_fp16_autocast_gives_float32_outputs_close_to_fp32(r18_images):
    model = build_iresnet("iresnet18").eval()
    randomize_(model, torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = model(r18_images)
        model.fp16 = True
        half = model(r18_images)
    assert half.embedding.dtype == torch.float32 and half.bottleneck.dtype == torch.float32
    cos = F.cosine_similarity(half.embedding, ref.embedding, dim=1)
    assert (cos > 0.98).all(), cos


def test_rejects_wrong_input_size():
    with pytest.raises(ValueError, match="112x112"):
        build_iresnet("iresnet18")(torch.zeros(1, 3, 96, 112))


@pytest.mark.parametrize("activation", SCALE_ACTIVATIONS)
def test_scale_predictor_matches_formula(activation):
    torch.manual_seed(0)
    head = ScalePredictor((40, 8, 1), batch_norm=True, activation=activation, coefficient=16.0).eval()
    randomize_(head, torch.Generator().manual_seed(2))
    x = torch.randn(5, 40)
    lin, bn, _, out = head.mlp
    h = lin.weight @ x.T  # (8, 5)
    h = (h - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
    z = (out.weight @ torch.relu(h)).reshape(-1)
    s = torch.sigmoid(z)
    expected = {
        "lin": z,
        "exp": torch.exp(z),
        "sigm": s,
        "sigm_mul": 16 * s,
        "sigm_sum": 16 + s,
        "sigm_sum_mul": 16 + 16 * s,
        "relu": 16 * torch.relu(z),
    }[activation]
    with torch.inference_mode():
        got = head(x)
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_scale_predictor_layer_indices_follow_original():
    """mlp.<i> indices: with batch norm Linear, BN, ReLU, Linear; without it Linear, ReLU, Linear."""
    assert list(ScalePredictor((10, 4, 1), batch_norm=False).state_dict()) == ["mlp.0.weight", "mlp.2.weight"]
    assert list(ScalePredictor((10, 1)).state_dict()) == ["mlp.0.weight"]
    with pytest.raises(ValueError, match="activation"):
        ScalePredictor((10, 1), activation="softplus")


def test_pfe_head_matches_formula():
    head = PFESigmaHead(30, 6).eval()
    randomize_(head, torch.Generator().manual_seed(4))
    x = torch.randn(4, 30, dtype=torch.float64)
    sd = {k: v.double() for k, v in head.state_dict().items()}
    w1 = sd["fc1"] / sd["fc1"].norm(dim=1, keepdim=True)
    w2 = sd["fc2"] / sd["fc2"].norm(dim=1, keepdim=True)
    h = x @ w1.T
    h = (h - sd["bn1.running_mean"]) / torch.sqrt(sd["bn1.running_var"] + 1e-5) * sd["bn1.weight"] + sd["bn1.bias"]
    h = torch.relu(h) @ w2.T
    h = (h - sd["bn2.running_mean"]) / torch.sqrt(sd["bn2.running_var"] + 1e-5)
    expected = torch.log(1e-6 + torch.exp(sd["gamma"] * h + sd["beta"]))
    with torch.inference_mode():
        got = head(x.float())
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


def test_loaded_model_outputs_per_family(r18_images):
    for family, head, extra in [
        ("arcface", None, None),
        ("scaleface", {"kind": "scale_predictor", "activation": "sigm_mul", "coefficient": 64}, "scale"),
        ("pfe", {"kind": "pfe"}, "sigma_sq"),
    ]:
        cfg = model_config_from_dict({"family": family, "backbone": {"arch": "iresnet18"}, "head": head})
        model = random_model(cfg, seed=1)
        out = model(r18_images)
        assert set(out) == {"embedding", "norm"} | ({extra} if extra else set())
        torch.testing.assert_close(out["norm"], out["embedding"].norm(dim=1))
        if extra == "scale":
            assert out["scale"].shape == (2,) and ((out["scale"] > 0) & (out["scale"] < 64)).all()
        if extra == "sigma_sq":
            log_sigma_sq = model.head(model.backbone(r18_images).bottleneck)
            torch.testing.assert_close(out["sigma_sq"], torch.exp(log_sigma_sq))


# ---------------------------------------------------------------- configs


def test_shipped_configs_load_with_family_conventions():
    names = available_model_configs()
    assert {"arcface_r50", "arcface_r18", "scaleface_r50", "pfe_r50", "magface_r50"} <= set(names)
    for name in names:
        cfg = load_model_config(name)
        pp = cfg.preprocessing
        if cfg.family == "magface":
            assert (pp.channel_order, pp.mean, pp.std, cfg.bn_eps) == ("BGR", (0.0,) * 3, (255.0,) * 3, 2e-5)
        else:
            assert pp.channel_order == "RGB" and cfg.bn_eps == 1e-5 and pp.mean == (127.5,) * 3
        if cfg.family in ("scaleface", "pfe"):
            assert pp.std == (128.0,) * 3
    assert load_model_config("arcface_r50").flip is True
    spec = load_model_config("scaleface_r50").model_spec(checkpoint="x.pth", checkpoint_sha256="ab")
    assert spec.outputs == ("embedding", "norm", "scale") and spec.config["head"]["coefficient"] == 64.0


SCALEFACE_REPO_SCALE_YAML = """
title: "scale_sigm_mul_coef_selection"
backbone:
    name: "iresnet50_normalized"
    learnable: false
scale_predictor:
    name: "MLPHead"
    num_feats: [25088, 512, 1]
    batch_norm: true
    {key}: "sigm_mul"
    coefficient: 32.
    fp16: false
"""

SCALEFACE_REPO_PFE_YAML = """
title: "iresnet_ms1m_pfe_normalized"
backbone:
    name: "iresnet50_normalized"
    learnable: false
head:
    name: "pfe_head_adjustable"
    in_feat: 25088
    out_feat: 512
    learnable: true
    criterion:
        name: "mlsloss"
optimizer:
    name: "sgd"
    lr: 0.001
"""


@pytest.mark.parametrize("key", ["exponent", "activation"])
def test_scaleface_repository_yaml_accepted_as_is(tmp_path, key):
    path = tmp_path / "64.yaml"
    path.write_text(SCALEFACE_REPO_SCALE_YAML.format(key=key))
    cfg = load_model_config(path)
    assert (cfg.family, cfg.arch, cfg.name) == ("scaleface", "iresnet50", "64")
    assert cfg.head.num_feats == (25088, 512, 1) and cfg.head.batch_norm is True
    assert (cfg.head.activation, cfg.head.coefficient) == ("sigm_mul", 32.0)
    assert (cfg.preprocessing.channel_order, cfg.preprocessing.std) == ("RGB", (128.0,) * 3)
    pfe_path = tmp_path / "pfe.yaml"
    pfe_path.write_text(SCALEFACE_REPO_PFE_YAML)
    pfe = load_model_config(pfe_path)
    assert (pfe.family, pfe.head.in_feat, pfe.head.out_feat) == ("pfe", 25088, 512)


def test_config_errors_name_the_key(tmp_path):
    base = yaml.safe_load((Path(__file__).parents[1] / "configs/models/scaleface_r50.yaml").read_text())
    cases = [
        ({**base, "colour": 1}, "colour"),
        ({**base, "family": "sphereface"}, "sphereface"),
        ({**base, "backbone": {"arch": "iresnet51"}}, "iresnet51"),
        ({**base, "head": {**base["head"], "activation": "tanh"}}, "tanh"),
        ({**base, "head": None}, "ScaleHeadConfig"),
        ({**base, "preprocessing": {"channel_order": "RBG"}}, "RBG"),
        ({**base, "preprocessing": {"size": 96}}, "size"),
    ]
    for data, needle in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=needle) as info:
            load_model_config(path)
        assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="known names"):
        load_model_config("no_such_model")


# ---------------------------------------------------------------- preprocessing


def test_preprocess_channel_order_mean_std_flip_and_layout():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
    insight = load_model_config("arcface_r50").preprocessing
    scale = load_model_config("scaleface_r50").preprocessing
    mag = load_model_config("magface_r50").preprocessing
    x = preprocess_batch(crops, insight)
    assert x.shape == (3, 3, 112, 112) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    nchw = crops.transpose(0, 3, 1, 2).astype(np.float32)
    np.testing.assert_allclose(x.numpy(), (nchw - 127.5) / 127.5, rtol=0, atol=1e-6)
    np.testing.assert_allclose(preprocess_batch(crops, scale).numpy(), (nchw - 127.5) / 128.0, atol=1e-6)
    # MagFace: BGR channel 0 is the image's blue channel, x / 255.
    np.testing.assert_allclose(preprocess_batch(crops, mag).numpy(), nchw[:, ::-1] / 255.0, atol=1e-7)
    flipped = preprocess_batch(crops, insight, flip=True).numpy()
    np.testing.assert_allclose(flipped, ((nchw - 127.5) / 127.5)[..., ::-1], atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_batch(crops.astype(np.float32), insight)
    with pytest.raises(ValueError, match="112x112"):
        preprocess_batch(crops[:, :100], insight)

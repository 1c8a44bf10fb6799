"""Checkpoint loading: every published layout round-trips, bad files fail naming keys, sharing keys are right.

Checkpoints are written the way the original code saves them (torch.save of a bare state_dict,
of {'backbone', 'scale_predictor'|'head'}, of {'epoch', 'arch', 'state_dict'} with
`features.module.` keys, or of a DataParallel `module.` state_dict) from iResNet-18 models with
seeded random non-trivial weights, then loaded and compared with the original modules' forward.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from extract.checkpoints import (
    CheckpointError,
    LoadedModel,
    backbone_identity,
    checkpoint_object,
    load_model,
    random_model,
    save_checkpoint,
)
from extract.models import build_backbone, build_head, load_model_config, model_config_from_dict

pytestmark = pytest.mark.torch

REFERENCE = Path("/work/shared/reference/checkpoint_layouts.json")


class NotATensor:
    """An arbitrary class: pickling it makes a checkpoint that needs full unpickling."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def r18(family: str, **pp) -> object:
    head = {
        "scaleface": {"kind": "scale_predictor", "num_feats": [25088, 64, 1], "coefficient": 64.0},
        "pfe": {"kind": "pfe"},
    }.get(family)
    # iResNet-18 with a 64-d embedding keeps files and forwards small; the layout is otherwise real.
    if head and head["kind"] == "pfe":
        head["out_feat"] = 64
    data = {"family": family, "backbone": {"arch": "iresnet18", "embedding_dim": 64}, "head": head}
    if pp:
        data["preprocessing"] = pp
    return model_config_from_dict(data, source=f"test:{family}")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(11))


@pytest.fixture(scope="module")
def models() -> dict:
    """One random model per family, the ScaleFace and PFE ones sharing the same backbone weights."""
    out = {f: random_model(r18(f), seed=i) for i, f in enumerate(("arcface", "scaleface", "pfe", "magface"))}
    out["pfe"].backbone.load_state_dict(out["scaleface"].backbone.state_dict())
    out["pfe"].backbone_key = backbone_identity(out["pfe"].backbone, out["pfe"].config)
    return out


@pytest.fixture(scope="module")
def direct(models, images) -> dict:
    """Each family's outputs from the original (unsaved) modules."""
    return {family: _direct(model, images) for family, model in models.items()}


def _direct(model, images) -> dict:
    with torch.inference_mode():
        out = model.backbone(images)
        result = {"embedding": out.embedding}
        if model.head is not None:
            result["head"] = model.head(out.bottleneck)
    return result


LAYOUTS = [
    ("arcface", "bare"),
    ("arcface", "dataparallel"),
    ("scaleface", "sectioned"),
    ("pfe", "sectioned"),
    ("magface", "magface"),
    ("magface", "bare"),
]


@pytest.mark.parametrize(("family", "layout"), LAYOUTS)
def test_each_layout_loads_and_reproduces_forward(tmp_path, models, direct, images, family, layout):
    model = models[family]
    path = save_checkpoint(model, tmp_path / f"{family}_{layout}.pth", layout)
    loaded = load_model(path, model.config)
    again = _direct(loaded, images)
    assert torch.equal(direct[family]["embedding"], again["embedding"])
    if model.head is not None:
        assert torch.equal(direct[family]["head"], again["head"])
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.backbone_key == model.backbone_key
    assert not loaded.backbone.training and (loaded.head is None or not loaded.head.training)


def test_checkpoint_objects_match_reference_layouts_for_iresnet50():
    """The objects we save for iResNet-50 have exactly the published files' keys, shapes and dtypes."""
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} not available")
    ref = json.loads(REFERENCE.read_text())

    def layout(obj):
        if isinstance(obj, torch.Tensor):
            return {"shape": list(obj.shape), "dtype": str(obj.dtype).removeprefix("torch.")}
        if isinstance(obj, dict):
            return {k: layout(v) for k, v in obj.items()}
        return {"type": type(obj).__name__, "value": obj}

    cases = {
        "arcface_r50_backbone": ("arcface_r50", "bare"),
        "scaleface_r50": ("scaleface_r50", "sectioned"),
        "pfe_r50": ("pfe_r50", "sectioned"),
        "magface_r50": ("magface_r50", "magface"),
    }

    for ref_name, (config_name, fmt) in cases.items():
        cfg = load_model_config(config_name)
        with torch.device("meta"):  # shapes and dtypes only: no 25M-weight allocation
            model = LoadedModel(cfg, build_backbone(cfg), build_head(cfg), "", "", "", "test")
        assert layout(checkpoint_object(model, fmt)) == ref[ref_name]["layout"], ref_name


def test_magface_training_save_with_classifier_and_optimizer(tmp_path, models, direct, images):
    """Real MagFace saves carry the classifier and optimizer state: ignored and reported, not errors."""
    model = models["magface"]
    obj = checkpoint_object(model, "magface")
    obj["state_dict"]["fc.weight"] = torch.randn(10, 512)
    obj["optimizer"] = {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
    path = tmp_path / "magface_full.pth"
    torch.save(obj, path)
    loaded = load_model(path, model.config)
    assert loaded.ignored_keys == ["fc.weight"]
    assert loaded.checkpoint_format == "state_dict:features.module."
    assert torch.equal(_direct(loaded, images)["embedding"], direct["magface"]["embedding"])


def test_module_features_prefix_variant(tmp_path, models, direct, images):
    sd = OrderedDict((f"module.features.{k}", v) for k, v in models["magface"].backbone.state_dict().items())
    torch.save({"epoch": 3, "arch": "iresnet18", "state_dict": sd}, tmp_path / "mf.pth")
    loaded = load_model(tmp_path / "mf.pth", models["magface"].config)
    assert torch.equal(_direct(loaded, images)["embedding"], direct["magface"]["embedding"])


def _save(tmp_path, obj, name="bad.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_missing_extra_and_misshaped_keys_are_named(tmp_path, models):
    model = models["scaleface"]
    good = checkpoint_object(model, "sectioned")

    missing = {"backbone": dict(good["backbone"]), "scale_predictor": good["scale_predictor"]}
    del missing["backbone"]["layer2.1.prelu.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys 1: layer2\.1\.prelu\.weight"):
        load_model(_save(tmp_path, missing), model.config)

    extra = {
        "backbone": {**good["backbone"], "layer5.0.conv1.weight": torch.zeros(1)},
        "scale_predictor": good["scale_predictor"],
    }
    with pytest.raises(CheckpointError, match=r"unexpected keys 1: layer5\.0\.conv1\.weight"):
        load_model(_save(tmp_path, extra), model.config)

    shaped = {
        "backbone": good["backbone"],
        "scale_predictor": {
            "mlp.0.weight": torch.zeros(32, 25088),
            **{k: v for k, v in good["scale_predictor"].items() if k != "mlp.0.weight"},
        },
    }
    with pytest.raises(CheckpointError, match=r"mlp\.0\.weight \(checkpoint \(32, 25088\), model \(64, 25088\)\)"):
        load_model(_save(tmp_path, shaped), model.config)


def test_many_missing_keys_are_counted_and_truncated(tmp_path, models):
    """An iResNet-50 config given an iResNet-18 file: counts plus the first keys, not 300 lines.

    iResNet-50 has 16 more blocks of 18 keys each (3 BN x 5, 2 convs, 1 PReLU): 288 missing."""
    path = save_checkpoint(models["arcface"], tmp_path / "r18.pth", "bare")
    with pytest.raises(CheckpointError) as info:
        load_model(path, load_model_config("arcface_r50"))
    message = str(info.value)
    assert str(path) in message and "missing keys 288:" in message and "more)" in message
    assert "layer1.2.bn1.weight" in message and "fc.weight (checkpoint (64, 25088), model (512, 25088))" in message


def test_config_and_checkpoint_family_mismatch(tmp_path, models):
    bare = save_checkpoint(models["arcface"], tmp_path / "bare.pth", "bare")
    with pytest.raises(CheckpointError, match="needs a 'scale_predictor' state_dict"):
        load_model(bare, models["scaleface"].config)
    sectioned = save_checkpoint(models["pfe"], tmp_path / "pfe.pth", "sectioned")
    with pytest.raises(CheckpointError, match="needs a 'scale_predictor'"):
        load_model(sectioned, models["scaleface"].config)
    with pytest.raises(CheckpointError, match="carries a 'head' head"):
        load_model(sectioned, models["arcface"].config)


def test_untrusted_pickle_refused_unless_trusted(tmp_path, models, direct, images):
    obj = checkpoint_object(models["arcface"], "dataparallel")
    path = _save(tmp_path, {"state_dict": obj, "args": NotATensor()}, "pickled.pth")
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as info:
        load_model(path, models["arcface"].config)
    assert str(path) in str(info.value) and "NotATensor" in str(info.value)
    loaded = load_model(path, models["arcface"].config, trust=True)
    assert torch.equal(_direct(loaded, images)["embedding"], direct["arcface"]["embedding"])


def test_unreadable_files(tmp_path, models):
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "absent.pth", models["arcface"].config)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_model(junk, models["arcface"].config)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        load_model(_save(tmp_path, {"weights": [1, 2]}), models["arcface"].config)


def test_backbone_key_shares_only_identical_weights_and_preprocessing(models):
    sf, pfe, arc = models["scaleface"], models["pfe"], models["arcface"]
    assert sf.backbone_key == pfe.backbone_key  # same weights, same ScaleFace-repo preprocessing
    assert sf.backbone_key != arc.backbone_key  # different weights
    other_pp = r18("scaleface", channel_order="BGR")
    same_weights = random_model(other_pp, seed=1)
    same_weights.backbone.load_state_dict(sf.backbone.state_dict())
    assert backbone_identity(same_weights.backbone, other_pp) != sf.backbone_key
    assert backbone_identity(sf.backbone, sf.config) == sf.backbone_key


def test_random_model_is_seeded_and_non_trivial():
    cfg = r18("pfe")
    a, b, c = random_model(cfg, seed=5), random_model(cfg, seed=5), random_model(cfg, seed=6)
    sa, sb, sc = a.backbone.state_dict(), b.backbone.state_dict(), c.backbone.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    assert a.backbone_key == b.backbone_key != c.backbone_key
    bn = a.backbone.layer1[0].bn2
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    slopes = a.backbone.prelu.weight
    assert slopes.min() >= 0.05 and slopes.max() <= 0.5 and slopes.std() > 0
    assert a.head.gamma.item() != 1.0 and a.random_init and a.sha256 == ""


def test_backbone_only_config_reads_the_backbone_of_a_headed_checkpoint(tmp_path, models, direct, images):
    """The embedding-norm baseline runs the backbone of a ScaleFace training checkpoint."""
    import dataclasses

    sectioned = save_checkpoint(models["scaleface"], tmp_path / "sf.pth", "sectioned")
    cfg = dataclasses.replace(models["arcface"].config, backbone_only=True,
                              preprocessing=models["scaleface"].config.preprocessing)
    loaded = load_model(sectioned, cfg)
    assert loaded.head is None and loaded.ignored_keys and all(k.startswith("scale_predictor.") for k in loaded.ignored_keys)
    assert loaded.backbone_key == models["scaleface"].backbone_key
    assert load_model_config("embnorm_r50").backbone_only

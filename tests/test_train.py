"""train: the losses against textbook formulas and brute force, the centres' checks, and resume on CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.centres import CentreError, estimate_centres, load_centres, mean_centre_cosine, save_shards
from train.config import TrainConfigError, load_train_config, train_config_from_dict
from train.losses import (
    arcface_logits,
    build_pair_classifier,
    mls_loss,
    pair_batch,
    pair_uncertainty,
    scaleface_loss,
)
from train.validate import ten_fold_accuracy


def _cos_labels(b=6, c=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    cos = (torch.rand(b, c, generator=g, dtype=dtype) * 2 - 1) * 0.95
    labels = torch.randint(0, c, (b,), generator=g)
    return cos, labels


def _z_bruteforce(cos: np.ndarray, labels: np.ndarray, m: float) -> np.ndarray:
    z = cos.copy()
    for i, y in enumerate(labels):
        z[i, y] = math.cos(math.acos(cos[i, y]) + m)
    return z


def test_constant_predicted_scale_64_equals_plain_arcface():
    cos, labels = _cos_labels()
    per_image = arcface_logits(cos, labels, torch.full((len(labels),), 64.0, dtype=torch.float64), 0.5)
    plain = arcface_logits(cos, labels, 64.0, 0.5)
    want = 64.0 * _z_bruteforce(cos.numpy(), labels.numpy(), 0.5)
    assert torch.equal(per_image, plain)
    np.testing.assert_allclose(plain.numpy(), want, rtol=1e-12, atol=1e-12)
    ce = F.cross_entropy(torch.from_numpy(want), labels)
    assert float(scaleface_loss(cos, labels, torch.full((len(labels),), 64.0, dtype=torch.float64))) == pytest.approx(
        float(ce), rel=1e-12
    )


def test_scale_gradient_is_analytic_and_matches_finite_differences():
    cos, labels = _cos_labels(b=7, c=4, seed=1)
    g = torch.Generator().manual_seed(2)
    s = (10 + 50 * torch.rand(len(labels), generator=g, dtype=torch.float64)).requires_grad_(True)
    scaleface_loss(cos, labels, s, 0.5).backward()
    z = _z_bruteforce(cos.numpy(), labels.numpy(), 0.5)
    sv = s.detach().numpy()
    logits = sv[:, None] * z
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    b = len(labels)
    analytic = ((p * z).sum(1) - z[np.arange(b), labels.numpy()]) / b
    np.testing.assert_allclose(s.grad.numpy(), analytic, rtol=1e-10, atol=1e-13)
    eps = 1e-4
    for i in range(b):
        up, down = s.detach().clone(), s.detach().clone()
        up[i] += eps
        down[i] -= eps
        fd = (float(scaleface_loss(cos, labels, up)) - float(scaleface_loss(cos, labels, down))) / (2 * eps)
        assert fd == pytest.approx(analytic[i], rel=1e-6, abs=1e-10)


def test_head_parameter_gradient_matches_finite_differences():
    from extract.models.heads import ScalePredictor, apply_scale_activation

    torch.manual_seed(0)
    head = ScalePredictor((12, 6, 1), batch_norm=True, activation="sigm_mul", coefficient=64.0).double().train()
    x = torch.randn(8, 12, dtype=torch.float64)
    cos, labels = _cos_labels(b=8, c=3, seed=3)

    def scale(x):  # the head's forward in float64 (its forward casts inputs to float32)
        return apply_scale_activation(head.mlp(x), head.activation, head.coefficient).reshape(-1)

    head.zero_grad()
    scaleface_loss(cos, labels, scale(x)).backward()
    w = head.mlp[0].weight
    grad = w.grad[2, 5].item()
    eps = 1e-5
    with torch.no_grad():
        w[2, 5] += eps
        up = float(scaleface_loss(cos, labels, scale(x)))
        w[2, 5] -= 2 * eps
        down = float(scaleface_loss(cos, labels, scale(x)))
        w[2, 5] += eps
    assert (up - down) / (2 * eps) == pytest.approx(grad, rel=1e-5, abs=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cosines_at_plus_minus_one_give_finite_loss_and_gradient(dtype):
    cos = torch.tensor([[1.0, -1.0, 0.2], [-1.0, 1.0, 0.0]], dtype=dtype)
    labels = torch.tensor([0, 0])
    s = torch.tensor([64.0, 32.0], requires_grad=True)
    loss = scaleface_loss(cos, labels, s)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_mls_loss_equals_double_loop():
    g = torch.Generator().manual_seed(4)
    mu = torch.randn(7, 5, generator=g, dtype=torch.float64)
    log_s = torch.randn(7, 5, generator=g, dtype=torch.float64) * 0.3
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    m = (mu / mu.norm(dim=1, keepdim=True)).numpy()
    s = np.exp(log_s.numpy())
    vals = []
    for i in range(7):
        for j in range(i + 1, 7):
            if labels[i] == labels[j]:
                tot = s[i] + s[j]
                vals.append(sum((m[i, k] - m[j, k]) ** 2 / tot[k] + math.log(tot[k]) for k in range(5)))
    assert len(vals) == 4
    assert float(mls_loss(mu, log_s, labels)) == pytest.approx(np.mean(vals), rel=1e-12)
    assert float(mls_loss(mu, log_s, torch.arange(7))) == 0.0  # no genuine pair


def test_centres_from_shards_any_rank_count_and_mismatch_refused(tmp_path):
    weight = torch.randn(23, 8)
    save_shards(weight, tmp_path / "c", ranks=11)  # ranks 0..10: rank 10 sorts after 2 numerically
    loaded = load_centres(tmp_path / "c", 23, 8)
    assert torch.equal(loaded, weight)
    assert torch.equal(load_centres(tmp_path / "c" / "softmax_fc_gpu_3.pt", 23), weight)
    with pytest.raises(CentreError) as err:
        load_centres(tmp_path / "c", 25)
    msg = str(err.value)
    assert "23" in msg and "25" in msg and "\n" not in msg
    (tmp_path / "c" / "softmax_fc_gpu_4.pt").unlink()
    with pytest.raises(CentreError, match="ranks"):
        load_centres(tmp_path / "c", 23)


def test_estimated_centres_are_normalised_identity_means():
    g = torch.Generator().manual_seed(5)
    e = torch.randn(9, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0, 3])
    c = estimate_centres(e, labels, 5)
    for k in range(4):
        rows = e[labels == k]
        mean = (rows / rows.norm(dim=1, keepdim=True)).mean(0)
        np.testing.assert_allclose(c[k].numpy(), (mean / mean.norm()).numpy(), rtol=1e-12)
    assert torch.equal(c[4], torch.zeros(4, dtype=torch.float64))  # an identity without images
    assert mean_centre_cosine(c[:4], c[:4]) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["smart_cosine", "bilinear", "mlp"])
def test_pair_classifiers_and_balanced_pairs(kind):
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    pairs, target = pair_batch(labels, torch.Generator().manual_seed(0))
    same = (labels[pairs[:, 0]] == labels[pairs[:, 1]]).long()
    assert torch.equal(same, target) and int(target.sum()) == 5 and len(target) == 10
    clf = build_pair_classifier(kind, 6)
    logp = clf(torch.randn(10, 6), torch.randn(10, 6))
    assert logp.shape == (10, 2)
    np.testing.assert_allclose(logp.exp().sum(1).detach().numpy(), 1.0, rtol=1e-6)
    u = pair_uncertainty(logp)
    np.testing.assert_allclose(u.detach().numpy(), 1 - logp.exp().max(1).values.detach().numpy())


def test_ten_fold_accuracy_known_answers():
    issame = np.arange(20) >= 10
    scores = np.where(issame, 100.0, 0.0) + np.arange(20)  # separable with a gap: every fold's threshold works
    assert ten_fold_accuracy(scores, issame) == 1.0
    # one score for all: the best rule on the other folds calls every pair their majority class, which is
    # the held-out fold's minority (folds 0-4 hold only different pairs, 5-9 only same ones): 0 everywhere
    assert ten_fold_accuracy(np.zeros(20), issame) == 0.0


def test_configs_hold_the_repository_hyper_parameters_and_refuse_unknown_keys():
    ft = load_train_config("scale_finetune")
    assert (ft.epochs, ft.milestones, ft.margin, ft.clip_grad) == (12, (3, 6, 9), 0.5, 5.0)
    assert (ft.optimizer.lr, ft.optimizer.momentum, ft.optimizer.weight_decay, ft.batch_size) == (1e-4, 0.9, 5e-4, 128)
    e2e = load_train_config("scale_end2end")
    assert (e2e.mode, e2e.epochs, e2e.milestones) == ("end2end", 24, (6, 12, 18))
    pfe = load_train_config("pfe")
    assert (pfe.optimizer.lr, pfe.optimizer.nesterov, pfe.identities_per_batch, pfe.images_per_identity) == (
        1e-3, True, 64, 4,
    )  # fmt: skip
    assert load_train_config("pair_classifier").classifier == "smart_cosine"
    with pytest.raises(TrainConfigError, match="unknown key"):
        train_config_from_dict({"task": "scale-head", "lr": 1}, "x.yaml")

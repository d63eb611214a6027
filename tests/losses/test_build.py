"""`build_loss` and a contract test over every registered loss."""

import pytest
import torch

from noisytail.losses import (
    BuiltLoss,
    SumLoss,
    build_loss,
    class_balanced_weights,
    cross_entropy,
    drw_class_weights,
    generalized_ce,
    logit_adjusted_ce,
)
from noisytail.registry import LOSSES, RegistryError

COUNTS = [60, 30, 15, 8]
K = len(COUNTS)


def batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, K, generator=g), torch.randint(0, K, (n,), generator=g)


def test_build_by_name_and_mapping():
    logits, y = batch()
    ce = build_loss("ce")
    assert isinstance(ce, BuiltLoss)
    torch.testing.assert_close(ce(logits, y), cross_entropy(logits, y))
    gce = build_loss({"name": "gce", "q": 0.3})
    torch.testing.assert_close(
        gce(logits, y, reduction="none"), generalized_ce(logits, y, q=0.3, reduction="none")
    )
    assert "q=0.3" in repr(gce)


def test_class_counts_injected():
    logits, y = batch(1)
    la = build_loss({"name": "logit_adjustment", "tau": 0.5}, class_counts=COUNTS)
    torch.testing.assert_close(
        la(logits, y), logit_adjusted_ce(logits, y, class_counts=COUNTS, tau=0.5)
    )
    la_np = build_loss("logit_adjustment", class_counts=torch.tensor(COUNTS))
    torch.testing.assert_close(la_np(logits, y), logit_adjusted_ce(logits, y, class_counts=COUNTS))


def test_unknown_key_and_name_suggest():
    with pytest.raises(RegistryError, match="Did you mean 'gamma'"):
        build_loss({"name": "focal", "gama": 1.0})
    with pytest.raises(RegistryError, match="Did you mean 'focal'"):
        build_loss("focall")
    with pytest.raises(RegistryError, match="Valid losses:.*sum"):
        build_loss("nope")
    with pytest.raises(RegistryError, match="needs a 'name'"):
        build_loss({"q": 0.5})


def test_supplied_arguments_cannot_come_from_config():
    with pytest.raises(RegistryError, match="set by noisytail"):
        build_loss({"name": "ldam", "class_counts": [1, 2]}, class_counts=[1, 2])
    with pytest.raises(RegistryError, match="set by noisytail"):
        build_loss({"name": "ce", "reduction": "sum"})


def test_missing_class_counts():
    with pytest.raises(ValueError, match="class_counts"):
        build_loss("balanced_softmax")


def test_class_weight_per_call():
    logits, y = batch(2)
    w = drw_class_weights(COUNTS, epoch=5, start_epoch=0)
    ldam = build_loss("ldam", class_counts=COUNTS)
    assert ldam.accepts_class_weight
    weighted = ldam(logits, y, class_weight=w)
    assert not torch.allclose(weighted, ldam(logits, y))
    cb = build_loss("cb_ce", class_counts=COUNTS)
    assert not cb.accepts_class_weight
    with pytest.raises(TypeError, match="class_weight"):
        cb(logits, y, class_weight=w)


def test_sum_combinator():
    logits, y = batch(3)
    spec = {
        "name": "sum",
        "terms": [{"name": "logit_adjustment", "weight": 1.0}, {"name": "gce", "weight": 0.5}],
    }
    loss = build_loss(spec, class_counts=COUNTS)
    assert isinstance(loss, SumLoss)
    expected = logit_adjusted_ce(logits, y, class_counts=COUNTS) + 0.5 * generalized_ce(logits, y)
    torch.testing.assert_close(loss(logits, y), expected)
    none = loss(logits, y, reduction="none")
    assert none.shape == (16,)
    torch.testing.assert_close(none.mean(), expected)
    assert loss.accepts_class_weight
    w = torch.linspace(0.5, 2.0, K)
    expected_w = logit_adjusted_ce(
        logits, y, class_counts=COUNTS, class_weight=w
    ) + 0.5 * generalized_ce(logits, y, class_weight=w)
    torch.testing.assert_close(loss(logits, y, class_weight=w), expected_w)


def test_sum_nested_names_and_errors():
    logits, y = batch(4)
    nested = build_loss({"name": "sum", "terms": ["ce", {"name": "sum", "terms": ["ce"]}]})
    torch.testing.assert_close(nested(logits, y), 2 * cross_entropy(logits, y))
    with pytest.raises(RegistryError, match="Did you mean 'terms'"):
        build_loss({"name": "sum", "term": ["ce"]})
    with pytest.raises(RegistryError, match="non-empty"):
        build_loss({"name": "sum", "terms": []})
    with pytest.raises(RegistryError, match="Did you mean 'ce'"):
        build_loss({"name": "sum", "terms": [{"name": "cee"}]})
    with pytest.raises(RegistryError, match="weight"):
        build_loss({"name": "sum", "terms": [{"name": "ce", "weight": "1"}]})
    with pytest.raises(RegistryError, match="no argument 'weight'"):
        build_loss({"name": "ce", "weight": 2.0})
    mixed = build_loss({"name": "sum", "terms": ["ce", "cb_ce"]}, class_counts=COUNTS)
    assert not mixed.accepts_class_weight
    with pytest.raises(TypeError, match="cb_ce"):
        mixed(logits, y, class_weight=torch.ones(K))


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_reductions_and_gradients(name):
    loss = build_loss(name, class_counts=COUNTS)
    logits, y = batch(5)
    logits.requires_grad_()
    none = loss(logits, y, reduction="none")
    assert none.shape == (16,)
    mean = loss(logits, y)
    assert mean.ndim == 0
    if name in ("cb_ce", "cb_focal"):  # class-weighted: mean = sum / sum of the labels' weights
        weights = class_balanced_weights(COUNTS, 0.9999)[y]
        torch.testing.assert_close(mean, none.sum() / weights.sum())
    else:
        torch.testing.assert_close(mean, none.mean())
    torch.testing.assert_close(loss(logits, y, reduction="sum"), none.sum())
    mean.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_falls_on_a_toy_problem(name):
    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(K, 8, generator=g)
    y = torch.repeat_interleave(torch.arange(K), torch.tensor(COUNTS) // 4)
    x = centers[y] + torch.randn(len(y), 8, generator=g)
    model = torch.nn.Linear(8, K)
    torch.nn.init.normal_(model.weight, std=0.01, generator=g)
    torch.nn.init.zeros_(model.bias)
    loss = build_loss(name, class_counts=COUNTS)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    first = loss(model(x), y).item()
    for _ in range(20):
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
    assert loss(model(x), y).item() < first

"""Frozen-feature evaluation: the encoder does not move, probe and kNN work, encoders reload."""

import numpy as np
import pytest
import torch

from noisytail.build import load_init
from noisytail.data.loader import PoolData
from noisytail.data.types import TensorStore
from noisytail.errors import ConfigError
from noisytail.evaluate_ssl import evaluate_encoder, extract_features, save_encoder
from noisytail.probes import knn_classify, knn_predict, linear_probe
from noisytail.registry import MODELS
from noisytail.runfolder import read_checkpoint


def blobs(n=300, k=3, d=5, seed=0, counts=None):
    g = torch.Generator().manual_seed(seed)
    centres = 5.0 * torch.randn(k, d, generator=g)
    y = (
        torch.arange(n) % k
        if counts is None
        else torch.repeat_interleave(torch.arange(k), torch.as_tensor(counts))
    )
    return centres[y] + torch.randn(len(y), d, generator=g), y


def pool(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = np.arange(n) % 4
    store = TensorStore(data)
    return PoolData(
        store, np.arange(n), mean=(0.5,), std=(0.25,), device=torch.device("cpu")
    ), labels


def model():
    torch.manual_seed(0)
    return MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=4)


def test_extract_features_is_frozen_and_restores_the_mode():
    m = model()
    m.train()
    data, _ = pool()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    feats = extract_features(m, data, batch_size=16)
    assert feats.shape == (40, m.feature_dim)
    assert not feats.requires_grad and feats.grad_fn is None
    assert m.training
    for k, v in m.state_dict().items():  # BN running stats included: eval mode was used
        assert torch.equal(v, before[k]), k


def test_linear_probe_leaves_the_encoder_alone():
    m = model()
    train, ytr = pool(40, 0)
    test, yte = pool(20, 1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = evaluate_encoder(m, train, ytr, test, yte, num_classes=4, probe_epochs=3, knn_k=5)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in m.parameters())
    for key in ("linear_probe", "knn"):
        assert 0.0 <= res[key]["accuracy"] <= 1.0
        assert "few_shot_accuracy" in res[key]


def test_linear_probe_learns_separable_features():
    x, y = blobs()
    xt, yt = blobs(seed=0)
    res = linear_probe(x, y, xt, yt, epochs=20, lr=0.05)
    assert res["accuracy"] > 0.95 and res["train_accuracy"] > 0.95


def test_linear_probe_reports_shot_groups_by_training_frequency():
    counts = [600, 60, 5]
    x, y = blobs(counts=counts, seed=2)
    xt, yt = blobs(counts=[20, 20, 20], seed=2)
    res = linear_probe(x, y, xt, yt, epochs=10, lr=0.05)
    assert res["shot_groups"] == ["many", "medium", "few"]
    assert res["few_shot_accuracy"] is not None


def test_probes_report_mttv_thirds_by_training_frequency():
    # a long tail whose fixed-threshold groups (>100 / <20) would not be thirds: the thirds are
    # the 3 most frequent classes, the 4 middle ones and the 3 rarest, each its classes' mean
    counts = [8, 400, 200, 100, 60, 40, 30, 20, 12, 5]  # class 0 rare: by count, not by id
    x, y = blobs(counts=counts, seed=3, k=10)
    xt, yt = blobs(counts=[10] * 10, seed=4, k=10)
    for res in (knn_classify(x, y, xt, yt, k=5), linear_probe(x, y, xt, yt, epochs=3)):
        per_class = np.array(res["per_class_accuracy"], dtype=float)
        want = {
            "many": per_class[[1, 2, 3]].mean(),
            "medium": per_class[[4, 5, 6, 7]].mean(),
            "few": per_class[[0, 8, 9]].mean(),
        }
        assert res["thirds_accuracy"] == pytest.approx(want)


def test_knn_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    probs = knn_predict(train, labels, torch.tensor([[1.0, 0.05], [0.1, 1.0]]), k=2, t=0.1)
    assert probs.shape == (2, 2)
    assert torch.allclose(probs.sum(1), torch.ones(2))
    assert probs[0].argmax() == 0 and probs[1].argmax() == 1
    # k=1 on the second query: its nearest neighbour is class 1, so all the mass goes there.
    one = knn_predict(train, labels, torch.tensor([[0.1, 1.0]]), k=1, t=0.1)
    assert one.tolist() == [[0.0, 1.0]]


def test_knn_classify_on_blobs():
    x, y = blobs()
    xt, yt = blobs(seed=0)
    res = knn_classify(x, y, xt, yt, k=20)
    assert res["accuracy"] > 0.95 and res["k"] == 20


def test_save_encoder_is_read_by_model_init(tmp_path):
    src = model()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    path = save_encoder(src, tmp_path / "enc" / "encoder.pt")
    assert set(read_checkpoint(path)) == {"model"}
    torch.manual_seed(1)
    dst = MODELS.build("small_cnn", num_classes=7, input_shape=(1, 8, 8), width=4)  # other head
    load_init(dst, str(path))
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        if not name.startswith("head."):
            assert torch.equal(a, b), name


def test_save_encoder_of_a_method_saves_its_backbone(tmp_path):
    from noisytail.methods.base import TaskInfo
    from noisytail.registry import METHODS

    info = TaskInfo(4, np.array([1, 1, 1, 1]), 4, (1, 8, 8), 1, 1)
    method = METHODS.build("simclr", args={}, model=model(), info=info)
    path = save_encoder(method, tmp_path / "e.pt")
    keys = set(read_checkpoint(path)["model"])
    assert keys == set(method.model.state_dict())


@pytest.mark.parametrize("standardize", [True, False])
def test_probe_is_seeded(standardize):
    x, y = blobs(n=60)
    a = linear_probe(x, y, x, y, epochs=2, standardize=standardize, seed=3)
    b = linear_probe(x, y, x, y, epochs=2, standardize=standardize, seed=3)
    assert a["accuracy"] == b["accuracy"] and a["nll"] == b["nll"]


def test_export_pretrained_then_fine_tune(tmp_path, digits_config):
    import json

    from noisytail.evaluate_ssl import export_pretrained
    from noisytail.train import fit

    pre = digits_config("method.name=simclr", "data.augment=simclr", "train.epochs=1")
    fit(pre, tmp_path / "pre", write_report=False)
    res = export_pretrained(tmp_path / "pre", probe_epochs=2, knn_k=10)
    assert (tmp_path / "pre" / "encoder.pt").exists()
    keys = set(read_checkpoint(tmp_path / "pre" / "encoder.pt")["model"])
    assert keys and not any(k.startswith("head.") for k in keys)  # the probe head stays behind
    saved = json.loads((tmp_path / "pre" / "ssl_evaluation.json").read_text())
    assert saved["linear_probe"]["accuracy"] == res["linear_probe"]["accuracy"]
    assert "few_shot_accuracy" in saved["knn"]
    last = (tmp_path / "pre" / "encoder.pt").read_bytes()
    best = export_pretrained(tmp_path / "pre", checkpoint="best", probe_epochs=2, knn_k=10)
    assert (
        best["encoder"].endswith("encoder_best.pt")
        and (tmp_path / "pre" / "encoder.pt").read_bytes() == last
    )
    assert (tmp_path / "pre" / "ssl_evaluation_best.json").is_file()
    from noisytail.data.types import DataError
    from noisytail.inference import TrainedModel

    with pytest.raises(DataError, match="pre-training run: it learned an encoder"):
        TrainedModel.from_run(tmp_path / "pre")  # its head is only an online probe
    fine = digits_config("train.epochs=1", f"model.init={tmp_path / 'pre' / 'encoder.pt'}")
    assert fit(fine, tmp_path / "fine", write_report=False).finished


def test_save_encoder_without_head_leaves_a_fresh_classifier(tmp_path):
    src = model()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    path = save_encoder(src, tmp_path / "e.pt", include_head=False)
    keys = set(read_checkpoint(path)["model"])
    assert keys and not any(k.startswith("head.") for k in keys)
    dst = model()  # same seed as src before the shift: equal head means "not loaded"
    fresh_head = {k: v.clone() for k, v in dst.head.state_dict().items()}
    load_init(dst, str(path))
    assert torch.equal(dst.body[0].weight, src.body[0].weight)
    for k, v in dst.head.state_dict().items():
        assert torch.equal(v, fresh_head[k]), k


def test_frequency_thirds_and_group_accuracy():
    from noisytail.groups import frequency_groups, group_accuracy

    counts = [6000, 3602, 2163, 1298, 779, 468, 281, 169, 101, 60]  # FMNIST, ratio 100
    groups = frequency_groups(counts)
    assert list(groups) == ["many"] * 3 + ["medium"] * 4 + ["few"] * 3
    shuffled = frequency_groups([60, 6000, 779, 3602, 101, 2163, 169, 1298, 281, 468])
    assert list(shuffled[[1, 3, 5]]) == ["many"] * 3 and list(shuffled[[0, 4, 6]]) == ["few"] * 3
    acc = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.2, None]
    res = group_accuracy(acc, groups)
    assert res == pytest.approx({"many": 1.0, "medium": 0.5, "few": 0.1})
    assert group_accuracy([0.5] * 3, ["many"] * 3)["few"] is None
    with pytest.raises(ValueError, match="at least 3"):
        frequency_groups([5, 1])


def test_balanced_indices():
    from noisytail.data.splits import balanced_indices

    labels = np.repeat([0, 1, 2], [50, 20, 3])
    idx = balanced_indices(labels, 10, seed=1)
    assert np.bincount(labels[idx]).tolist() == [10, 10, 3]
    assert len(set(idx.tolist())) == len(idx)
    assert np.array_equal(idx, balanced_indices(labels, 10, seed=1))
    assert not np.array_equal(idx, balanced_indices(labels, 10, seed=2))


def test_model_init_refuses_an_encoder_of_another_model(tmp_path):
    """Only BatchNorm's step counters (scalars) would fit a model of another width: a start
    from them is a start from random weights, so it is refused, naming the first misfit."""
    path = save_encoder(model(), tmp_path / "encoder.pt")  # width 4
    wider = MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=8)
    with pytest.raises(ConfigError, match=r"does not fit model SmallCNN: \d+ of its \d+ weights"):
        load_init(wider, str(path))
    mlp = MODELS.build("mlp", num_classes=4, input_shape=(64,))
    with pytest.raises(ConfigError, match="MLP: 4 of its 4 weights"):
        load_init(mlp, str(path))


def test_export_pretrained_probes_on_the_source_split_with_its_own_labels(
    tmp_path, digits_config, monkeypatch
):
    """``probe_train="source"`` (MTTV's protocol): every sample of the source's training split,
    before the long tail, the noise and the validation split, with the source's labels; the
    shot groups still by the run's long-tailed pool."""
    import noisytail.evaluate_ssl as evaluate_ssl
    from noisytail.cli import _PROBE_SETS
    from noisytail.evaluate_ssl import PROBE_TRAIN_SETS, export_pretrained
    from noisytail.train import Run, fit

    assert tuple(_PROBE_SETS) == PROBE_TRAIN_SETS  # the CLI's choices are the library's
    pre = digits_config(
        "method.name=simclr",
        "data.augment=simclr",
        "train.epochs=1",
        "imbalance.ratio=10",
        "noise.kind=symmetric",
        "noise.rate=0.6",
    )
    fit(pre, tmp_path / "pre", write_report=False)
    seen = {}
    real = evaluate_ssl.evaluate_encoder

    def spy(model, train_data, train_labels, *args, **kwargs):
        seen[len(seen)] = (len(train_data), np.asarray(train_labels), kwargs["class_counts"])
        return real(model, train_data, train_labels, *args, **kwargs)

    monkeypatch.setattr(evaluate_ssl, "evaluate_encoder", spy)
    pool = export_pretrained(tmp_path / "pre", probe_epochs=1, knn_k=5)
    source = export_pretrained(tmp_path / "pre", probe_epochs=1, knn_k=5, probe_train="source")
    prepared = Run.from_folder(tmp_path / "pre").data
    (n_pool, pool_labels, pool_counts), (n_src, src_labels, src_counts) = seen[0], seen[1]
    assert n_pool == len(prepared.train_idx) == pool["probe_train"]["size"]
    np.testing.assert_array_equal(pool_labels, prepared.train_labels)  # the noisy labels
    assert n_src == len(prepared.bundle.train) > n_pool + len(prepared.corruption.val_idx)
    np.testing.assert_array_equal(src_labels, prepared.bundle.train.labels)
    assert not np.array_equal(src_labels[prepared.train_idx], pool_labels)  # 60 % noise
    np.testing.assert_array_equal(src_counts, pool_counts)  # groups by the long-tailed pool
    assert source["probe_train"] == {"set": "source", "size": n_src}
    with pytest.raises(ConfigError, match="probe_train must be one of pool, source"):
        export_pretrained(tmp_path / "pre", probe_train="balanced")

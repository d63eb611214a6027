"""`noisytail.benchmarks.icl_floor`: MOIT's ICL loss between its chance value and its floor."""

import math

import pytest
import torch

from noisytail.benchmarks.icl_floor import (
    icl_chance,
    icl_floor,
    icl_of_true_classes,
    icl_progress,
    read_moit_run,
)
from noisytail.losses.interpolated import interpolated_supcon
from noisytail.train import fit


@pytest.mark.parametrize("lam", [1.0, 0.7])
def test_chance_is_the_loss_of_identical_embeddings(lam):
    # every similarity equal: each key has probability 1 / (number of keys), whatever the masks
    b, m = 8, 20
    gen = torch.Generator().manual_seed(0)
    z = torch.ones(2 * b, 4)
    y = torch.randint(0, 3, (b,), generator=gen)
    perm = torch.randperm(b, generator=gen)
    batch_only = interpolated_supcon(z, y, y[perm], perm, lam)
    assert float(batch_only) == pytest.approx(icl_chance(b), abs=1e-5)
    assert icl_chance(b) == pytest.approx(math.log(2 * b - 1))
    both = interpolated_supcon(
        z, y, y[perm], perm, lam, memory_z=torch.ones(m, 4), memory_labels=torch.zeros(m).long()
    )
    assert float(both) == pytest.approx(icl_chance(b, m), abs=1e-5)
    assert icl_chance(b, m) == pytest.approx(math.log(15) + math.log(35))


def test_floor_without_mixup_reaches_the_jensen_bound():
    # lam = 1: the loss of an anchor with P positives is at least log P, reached when the
    # classes collapse to far-apart points; free embeddings get there
    out = icl_floor(3, 12, 0, dim=8, alpha=0, num_batches=2, steps=200, temperature=0.05)
    assert out["floor"] >= out["jensen_bound_no_mixup"] - 1e-4
    assert out["floor"] == pytest.approx(out["jensen_bound_no_mixup"], abs=0.02)
    assert out["start"] > out["floor"] + 0.5
    assert out["chance"] == pytest.approx(math.log(23))


def test_mixup_and_memory_raise_the_floor():
    kw = dict(dim=8, num_batches=4, steps=150, temperature=0.05)
    plain = icl_floor(3, 12, 0, alpha=0, **kw)
    mixed = icl_floor(3, 12, 0, alpha=1.0, **kw)
    assert mixed["floor"] > plain["floor"] + 0.1
    with_memory = icl_floor(3, 12, 60, alpha=1.0, **kw)
    assert with_memory["chance"] == pytest.approx(math.log(23) + math.log(83))
    assert with_memory["jensen_bound_no_mixup"] < with_memory["floor"] < with_memory["chance"]
    with pytest.raises(ValueError, match="needs more than"):
        icl_floor(3, 12, 100, num_batches=4)


def test_an_ideal_encoder_of_the_true_classes_under_noise_scores_above_chance():
    kw = dict(temperature=0.05, repeats=20)
    clean = icl_of_true_classes(4, 16, 64, alpha=0, **kw)
    bound = icl_floor(4, 16, 64, alpha=0, num_batches=8, steps=0)["jensen_bound_no_mixup"]
    assert clean == pytest.approx(bound, abs=0.1)  # the classes as points: log P per anchor
    # 40 % of the positives sit at other corners: learning the true classes costs loss
    assert icl_of_true_classes(4, 16, 64, noise_rate=0.4, alpha=0, **kw) > icl_chance(16, 64) + 1


def test_progress_from_chance_to_floor():
    assert icl_progress(13.0, 13.0, 10.0) == 0.0
    assert icl_progress(10.0, 13.0, 10.0) == 1.0
    assert icl_progress(12.1, 13.0, 10.0) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="must exceed"):
        icl_progress(1.0, 2.0, 2.0)


def test_read_moit_run_scores_the_projection(tmp_path, digits_config):
    run = tmp_path / "moit"
    fit(
        digits_config("method.name=moit", "data.augment=simclr", "train.epochs=2"),
        run,
        write_report=False,
    )
    row = read_moit_run(run)
    assert row["epoch"] == 2
    assert row["icl_loss"] > 0
    # digits' projection after two epochs separates classes far above chance (0.1)
    assert 0.3 < row["projection_knn_accuracy"] <= 1.0
    assert 0.0 <= row["test_accuracy"] <= 1.0


def test_read_moit_run_refuses_other_methods(tmp_path, digits_config):
    run = tmp_path / "erm"
    fit(digits_config("train.epochs=1"), run, write_report=False)
    with pytest.raises(TypeError, match="no MOIT projection"):
        read_moit_run(run)

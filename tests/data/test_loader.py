import numpy as np
import pytest
import torch

from noisytail.data.augment import augment, random_crop, random_flip, to_float
from noisytail.data.loader import CyclingLoader, PoolData, TrainLoader
from noisytail.data.types import TensorStore


def pool(n=50, c=1, h=8, w=8):
    data = torch.arange(n * c * h * w, dtype=torch.int64).remainder(256).to(torch.uint8)
    store = TensorStore(data.view(n, c, h, w))
    return PoolData(
        store, np.arange(n), mean=(0.5,) * c, std=(0.25,) * c, device=torch.device("cpu")
    )


def test_to_float_normalises():
    x = torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(to_float(x, (0.5,), (0.25,)), torch.full((2, 1, 2, 2), 2.0))


def test_crop_keeps_shape_and_content_is_shifted_copy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    y = random_crop(x, g, padding=2, mode="constant")
    assert y.shape == x.shape
    # every crop is a shifted window of the zero-padded image: its interior overlaps the original
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        found = any(
            torch.equal(padded[i, :, a : a + 8, b : b + 8], y[i])
            for a in range(5)
            for b in range(5)
        )
        assert found


def test_flip_flips_about_half():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 1, 4, 4)
    y = random_flip(x, g)
    flipped = sum(torch.equal(y[i], x[i].flip(2)) for i in range(400))
    assert 150 < flipped < 250


def test_features_pass_through():
    x = torch.randn(4, 7)
    assert torch.equal(augment(x, "crop_flip", torch.Generator()), x)


def test_batches_cover_epoch_once_and_replay_exactly():
    data = pool()
    labels = np.arange(50) % 5
    loader = TrainLoader(data, labels, batch_size=10, augment_kind="crop_flip", seed=3)
    seen = torch.cat([b.idx for b in loader.epoch(0)])
    assert sorted(seen.tolist()) == list(range(50))
    a = [b.x for b in loader.epoch(1)]
    b = [b.x for b in loader.epoch(1)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    batch = next(iter(loader.epoch(0)))
    assert torch.equal(batch.labels, torch.as_tensor(labels)[batch.idx])
    assert not hasattr(batch, "true_labels")


def test_views_and_plain_view():
    data = pool()
    loader = TrainLoader(
        data,
        np.zeros(50, dtype=int),
        batch_size=8,
        augment_kind="crop_flip",
        views=2,
        include_plain_view=True,
    )
    batch = next(iter(loader.epoch(0)))
    assert isinstance(batch.x, tuple) and len(batch.x) == 3
    assert torch.equal(batch.x[2], data.inputs(batch.idx))


def test_class_balanced_sampler_balances():
    data = pool(n=50)
    labels = np.array([0] * 45 + [1] * 5)
    loader = TrainLoader(data, labels, batch_size=50, augment_kind="none", sampler="class_balanced")
    counts = np.zeros(2)
    for e in range(20):
        for b in loader.epoch(e):
            counts += np.bincount(b.labels.numpy(), minlength=2)
    assert abs(counts[1] / counts.sum() - 0.5) < 0.05


def test_sharding_splits_batches_between_ranks():
    data = pool()
    labels = np.zeros(50, dtype=int)
    ranks = [
        TrainLoader(data, labels, batch_size=5, augment_kind="none", rank=r, world_size=2)
        for r in range(2)
    ]
    a = torch.cat([b.idx for b in ranks[0].epoch(0)])
    b = torch.cat([b.idx for b in ranks[1].epoch(0)])
    assert len(set(a.tolist()) & set(b.tolist())) == 0
    assert len(a) + len(b) == 50


def test_an_unsharded_loader_serves_every_rank_the_whole_batch():
    """A meta set smaller than the global batch is not sharded (world_size 1): each rank gets
    all of it, in the same order, whatever its rank."""
    data = pool(n=20)
    labels = np.zeros(20, dtype=int)
    batches = [
        next(TrainLoader(data, labels, batch_size=20, augment_kind="none", rank=r).epoch(0)).idx
        for r in range(3)
    ]
    assert all(len(b) == 20 for b in batches)
    assert all(torch.equal(b, batches[0]) for b in batches)


def test_cycling_loader_restarts():
    data = pool(n=20)
    cyc = CyclingLoader(
        TrainLoader(data, np.zeros(20, dtype=int), batch_size=10, augment_kind="none")
    )
    idx = [cyc.next_batch().idx for _ in range(5)]
    assert len(idx) == 5


def test_each_training_epoch_draws_fresh_meta_batches_and_a_replay_repeats_them():
    # the meta loader cycles within a training epoch; the next training epoch must not replay
    # this one's meta batches shifted by one (it did: 8 distinct of 18 over 3 epochs)
    data = pool(n=20)
    loader = TrainLoader(
        data, np.zeros(20, dtype=int), batch_size=20, augment_kind="crop_flip", seed=1, stream=1
    )
    cyc = CyclingLoader(loader)
    seen = []
    for epoch in range(3):
        cyc.reset(epoch)
        seen += [cyc.next_batch().x for _ in range(6)]
    distinct = {tuple(x.flatten().tolist()) for x in seen}
    assert len(distinct) == 18
    cyc.reset(1)
    assert torch.equal(cyc.next_batch().x, seen[6])  # a resumed epoch 1 replays its own


def test_ranks_and_loaders_draw_augmentations_from_their_own_streams(monkeypatch):
    # rank 1 of the training loader (stream 0) must not share rank 0's meta loader's (stream 1)
    import noisytail.data.loader as loader_module

    streams = []
    real = loader_module.epoch_generator

    def spy(seed, epoch, stream=0):
        streams.append(stream)
        return real(seed, epoch, stream)

    monkeypatch.setattr(loader_module, "epoch_generator", spy)
    data, labels = pool(n=20), np.zeros(20, dtype=int)
    augment_streams = []
    for stream, rank in ((0, 1), (1, 0)):
        loader = TrainLoader(
            data,
            labels,
            batch_size=10,
            augment_kind="crop_flip",
            stream=stream,
            rank=rank,
            world_size=2,
        )
        streams.clear()
        next(loader.epoch(0))
        augment_streams.append(streams[1])  # (order, augmentation)
    assert augment_streams[0] != augment_streams[1]


def test_restrict_draws_only_from_the_subset_and_sets_the_steps():
    data = pool(50)
    labels = np.arange(50) % 5
    loader = TrainLoader(data, labels, batch_size=4, augment_kind="none", seed=3)
    assert len(loader) == 12  # 50 // 4
    subset = np.array([1, 4, 9, 16, 25, 36, 49, 2, 3, 7, 11])  # 11 positions
    loader.restrict(subset)
    assert len(loader) == 2  # 11 // 4, the last partial batch dropped
    for epoch in range(3):
        idx = torch.cat([b.idx for b in loader.epoch(epoch)])
        assert len(idx) == 8 and len(idx.unique()) == 8
        assert set(idx.tolist()) <= set(subset.tolist())
        batch = next(iter(loader.epoch(epoch)))
        assert torch.equal(batch.labels, torch.as_tensor(labels)[batch.idx])  # pool positions
    loader.restrict(None)
    assert len(loader) == 12


def test_restrict_with_the_class_balanced_sampler_stays_in_the_subset():
    labels = np.array([0] * 40 + [1] * 10)
    loader = TrainLoader(
        pool(50), labels, batch_size=10, augment_kind="none", sampler="class_balanced"
    )
    subset = np.r_[30:45]  # 10 of class 0, 5 of class 1
    loader.restrict(subset)
    idx = torch.cat([torch.cat([b.idx for b in loader.epoch(e)]) for e in range(20)])
    assert set(idx.tolist()) <= set(subset.tolist())
    assert float((torch.as_tensor(labels)[idx] == 1).float().mean()) == pytest.approx(0.5, abs=0.06)


def test_make_batch_serves_any_pool_positions_with_the_loader_views():
    data = pool(20)
    loader = TrainLoader(
        data,
        np.arange(20) % 3,
        batch_size=4,
        augment_kind="crop_flip",
        views=1,
        include_plain_view=True,
    )
    idx = torch.tensor([7, 7, 0, 19])  # repeats allowed
    batch = loader.make_batch(idx, torch.Generator().manual_seed(0))
    aug, plain = batch.x
    assert aug.shape == plain.shape == (4, 1, 8, 8)
    assert torch.equal(plain, data.inputs(idx)) and torch.equal(batch.idx, idx)
    assert batch.labels.tolist() == [1, 1, 0, 1]


def test_simclr_views_of_an_image_do_not_depend_on_its_batch_mates():
    """The colour operations act on the pixels' own [0, 1] scale (the pool's normalisation),
    not on the batch's range: an image's view is the same whatever shares its batch."""
    gen = torch.Generator().manual_seed(3)
    pixels = torch.randint(60, 190, (5, 3, 8, 8), generator=gen, dtype=torch.uint8)
    pixels[3:] = torch.randint(0, 256, (2, 3, 8, 8), generator=gen, dtype=torch.uint8)
    store = TensorStore(pixels)
    data = PoolData(
        store, np.arange(5), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), device=torch.device("cpu")
    )
    assert data.pixel_normalisation() == ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    loader = TrainLoader(data, np.zeros(5, dtype=np.int64), batch_size=3, augment_kind="simclr")
    for seed in range(8):  # jitter and grayscale act on some draws only
        views = []
        for mates in ([1, 2], [3, 4]):  # mid-grey mates, then mates with the full range
            gen = torch.Generator().manual_seed(seed)
            views.append(loader.make_batch(torch.tensor([0, *mates]), gen).x[0])
        assert torch.allclose(views[0], views[1], atol=1e-5)


def test_float_inputs_keep_the_batch_range_for_simclr_colour():
    store = TensorStore(torch.rand(4, 3, 8, 8) * 5 - 2)  # floats of unknown range
    data = PoolData(
        store, np.arange(4), mean=(0.0,) * 3, std=(1.0,) * 3, device=torch.device("cpu")
    )
    assert data.pixel_normalisation() == (None, None)

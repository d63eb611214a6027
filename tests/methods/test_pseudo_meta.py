"""meta.source=pseudo: a meta set drawn from the noisy training pool where the model and the label
agree (the L2B code's --no_val_data, for data without clean samples such as Clothing1M)."""

import numpy as np
import pytest
import torch

from noisytail.config import ConfigError
from noisytail.data.splits import pseudo_meta


def test_pseudo_meta_takes_the_most_confident_agreeing_samples_per_class():
    probs = np.array(
        [
            [0.9, 0.1, 0.0],  # 0: predicted 0, label 0, conf 0.9
            [0.6, 0.4, 0.0],  # 1: predicted 0, label 0, conf 0.6
            [0.95, 0.05, 0.0],  # 2: predicted 0, label 1: disagrees
            [0.2, 0.7, 0.1],  # 3: predicted 1, label 1
            [0.1, 0.2, 0.7],  # 4: predicted 2, label 2
            [0.0, 0.1, 0.9],  # 5: predicted 2, label 2
            [0.7, 0.3, 0.0],  # 6: predicted 0, label 0, conf 0.7
        ]
    )
    labels = np.array([0, 0, 1, 1, 2, 2, 0])
    pos, lab = pseudo_meta(probs, labels, np.array([2, 2, 1]))
    # class 0: 0 (0.9) and 6 (0.7) beat 1 (0.6); class 1 has only 3; class 2: 5 (0.9) beats 4
    assert pos.tolist() == [0, 3, 5, 6] and lab.tolist() == [0, 1, 2, 0]
    assert pos.dtype == np.int64
    with pytest.raises(Exception, match="probs"):
        pseudo_meta(probs[:3], labels, np.array([1, 1, 1]))


def test_config_needs_a_size(digits_config):
    with pytest.raises(ConfigError, match="pseudo"):
        digits_config("meta.source=pseudo")
    with pytest.raises(ConfigError, match="meta.source"):
        digits_config("meta.source=pseudolabel", "meta.per_class=3")


def test_the_loop_draws_the_meta_set_from_the_pool_each_epoch(tmp_path, digits_config):
    from noisytail.data.prepare import prepare_data
    from noisytail.train import Run, fit, setup_runtime

    cfg = digits_config(
        "method.name=l2rw",
        "meta.source=pseudo",
        "meta.per_class=4",
        "noise.kind=uniform",
        "noise.rate=0.3",
        "train.epochs=2",
        "train.grad_clip=0.25",
        "train.device=cpu",
    )
    data = prepare_data(cfg)
    assert len(data.corruption.meta_idx) == 0  # nothing clean held out
    run = Run(cfg, tmp_path / "r", setup_runtime(cfg), data)
    cycle = run._pseudo_meta_cycle()
    store_idx, labels = cycle.loader.data.idx, cycle.loader.labels_np
    pool_pos = np.searchsorted(data.corruption.train_idx, store_idx)
    assert np.array_equal(data.corruption.train_idx[pool_pos], store_idx)  # all from the pool
    # labels are the noisy labels, which the current model predicts, at most 4 per class
    assert np.array_equal(labels, data.train_labels[pool_pos])
    probs = run._predict_train(lambda x: torch.softmax(run.method.predict(x).float(), 1))
    probs = probs.cpu().numpy()
    assert np.array_equal(probs.argmax(1)[pool_pos], labels)
    assert np.bincount(labels, minlength=10).max() <= 4 and len(labels) > 0
    # ... and the most confident of those agreeing, per class
    agree = probs.argmax(1) == data.train_labels
    for c in np.unique(labels):
        chosen = probs[pool_pos[labels == c], c]
        others = probs[agree & (data.train_labels == c), c]
        assert chosen.min() >= np.sort(others)[-len(chosen)]
    # a meta method trains with it end to end
    summary = fit(cfg, tmp_path / "run", write_report=False)
    assert summary.finished and summary.num_meta == 0

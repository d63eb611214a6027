"""noisytail.find_label_issues and the out-of-sample probabilities behind it (detect/crossfit)."""

import numpy as np
import pytest
import torch

import noisytail
from noisytail.detect import crossfit as cf
from noisytail.detect import scores as sc


def clusters(n_per=30, k=3, d=6, seed=0, spread=6.0):
    """``k`` well-separated Gaussian clusters of ``n_per`` points each, labels 0..k-1."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per)
    x = np.eye(k, d)[y] * spread + rng.normal(size=(k * n_per, d))
    return x, y


def test_flipped_labels_in_clean_clusters_come_first():
    x, y = clusters()
    noisy = y.copy()
    flips = [5, 40, 77]
    noisy[flips] = (y[flips] + 1) % 3
    ranked, res = noisytail.find_label_issues(noisy, features=x)
    assert sorted(ranked[:3].tolist()) == flips
    assert sorted(res.issues.tolist()) == flips  # flagged: exactly the flips
    assert res.suggested[flips].tolist() == y[flips].tolist()
    assert res.signals == ("knn", "linear")
    assert res.scores.shape == (90,) and res.probs.shape == (90, 3)
    np.testing.assert_allclose(res.label_quality, 1 - res.scores)
    # torch input gives the same verdict
    ranked_t, res_t = noisytail.find_label_issues(torch.from_numpy(noisy), features=torch.tensor(x))
    assert ranked_t.tolist() == ranked.tolist()


def test_pred_probs_only_and_both():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array(
        [[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3]], dtype=np.float32
    )
    ranked, res = noisytail.find_label_issues(y, pred_probs=p)
    # suspicion 1 - p_y: 0.8 (row 2), 0.7 (row 5), 0.2 (rows 1 and 3: the same margin, so by
    # position), 0.1 (rows 0 and 4). Thresholds t = (0.633, 0.667): rows 2 and 5 are confidently
    # of the other class.
    assert ranked.tolist() == [2, 5, 1, 3, 0, 4]
    np.testing.assert_allclose(res.scores, 1 - p[np.arange(6), y], atol=1e-6)
    assert res.flagged.tolist() == [False, False, True, False, False, True]
    assert res.signals == ("pred_probs",)
    x, yc = clusters(n_per=10, k=2)
    probs = np.full((20, 2), 0.5)
    _, both = noisytail.find_label_issues(yc, pred_probs=probs, features=x)
    assert both.signals == ("knn", "pred_probs")
    knn = cf.knn_probs(cf.input_features(x), yc, 2)
    np.testing.assert_allclose(both.probs, (knn + probs) / 2)


def test_no_tied_scores_on_distinct_inputs():
    # a long-tailed, overlapping set: an unweighted 10-NN vote takes 11 values here
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), [80, 40, 20, 10])
    x = np.eye(4, 8)[y] * 1.5 + rng.normal(size=(150, 8))
    y_noisy = np.where(rng.random(150) < 0.2, rng.integers(0, 4, 150), y)
    _, res = noisytail.find_label_issues(y_noisy, features=x)
    assert len(np.unique(res.scores)) == 150
    # the weighted vote alone ties only where all or none of the neighbours agree (q_y = 1, 0)
    q = cf.knn_probs(x, y_noisy, 4, k=10)[np.arange(150), y_noisy]
    inside = (q > 0) & (q < 1)
    assert inside.sum() > 100 and len(np.unique(q[inside])) == inside.sum()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": [0, 1, 1]}, "needs pred_probs, features, or both"),
        ({"labels": [[0, 1]], "features": np.ones((1, 2))}, r"labels must be 1-D \[N\]"),
        ({"labels": [0.0, 1.0], "features": np.ones((2, 2))}, "labels must be integers"),
        ({"labels": ["a", "b"], "features": np.ones((2, 2))}, "got class names: encode them first"),
        ({"labels": [0, -1], "features": np.ones((2, 2))}, "labels must be >= 0"),
        ({"labels": [2, 2, 2], "features": np.ones((3, 2))}, "single class"),
        ({"labels": [0, 1], "pred_probs": np.ones(2)}, r"pred_probs must be 2-D \[N, K\]"),
        ({"labels": [0, 1], "pred_probs": np.full((3, 2), 0.5)}, "3 rows, expected one per label"),
        ({"labels": [0, 2], "pred_probs": np.full((2, 2), 0.5)}, "expected at least 3 columns"),
        ({"labels": [0, 1], "pred_probs": [[0.5, np.nan], [0.5, 0.5]]}, "NaN or infinite"),
        ({"labels": [0, 1], "pred_probs": [[1.5, -0.5], [0.5, 0.5]]}, "negative values"),
        ({"labels": [0, 1], "pred_probs": [[0.5, 0.5], [2.0, 1.0]]}, "row 1 sums to 3"),
        ({"labels": [0, 1], "features": np.ones(2)}, r"features must be \[N, D\]"),
        ({"labels": [0, 1], "features": np.ones((3, 2))}, "3 rows, expected one per label"),
        ({"labels": [0, 1], "features": [[1.0, np.inf], [0, 1]]}, "NaN or infinite"),
        ({"labels": [0, 1, 1], "features": np.eye(3)}, "Class '0' has 1 sample.*5 folds"),
        ({"labels": [0, 1, 1], "features": np.eye(3), "folds": 2}, "Class '0' has 1 sample"),
        ({"labels": [0, 1], "pred_probs": np.eye(2), "flag": "top"}, "flag must be one of"),
        ({"labels": [0, 1], "features": np.eye(2), "k": 2}, r"k must lie in \[1, 1\]"),
        ({"labels": [0, 1], "features": np.eye(2), "folds": 1}, "folds must be >= 2"),
    ],
)
def test_bad_input_is_a_value_error(kwargs, message):
    labels = kwargs.pop("labels")
    with pytest.raises(ValueError, match=message):
        noisytail.find_label_issues(labels, **kwargs)


def test_knn_probs_leave_one_out():
    """A sample's own label never votes for it: changing it leaves its row unchanged, and the
    probabilities match a hand-written weighted vote."""
    x, y = clusters(n_per=8, k=2, d=3, seed=1, spread=2.0)
    q = cf.knn_probs(x, y, 2, k=5)
    y2 = y.copy()
    y2[3] = 1 - y2[3]
    q2 = cf.knn_probs(x, y2, 2, k=5)
    np.testing.assert_allclose(q2[3], q[3])
    assert not np.allclose(q2, q)  # the label does vote for the others
    xc = x - x.mean(0)
    xn = xc / np.linalg.norm(xc, axis=1, keepdims=True)
    sims = xn @ xn.T
    np.fill_diagonal(sims, -np.inf)
    for i in (0, 3, 12):
        top = np.argsort(-sims[i])[:5]
        w = np.exp(sims[i, top] / cf.KNN_TEMPERATURE)
        expected = np.bincount(y[top], weights=w, minlength=2) / w.sum()
        np.testing.assert_allclose(q[i], expected, rtol=1e-4)


def test_linear_probs_cross_fitted():
    """Each fold is scored by a model fitted without it (an independent scikit-learn fit)."""
    from sklearn.linear_model import LogisticRegression

    x, y = clusters(n_per=20, k=3, d=4, seed=2, spread=1.0)
    p = cf.linear_probs(x, y, 3, folds=4, seed=5)
    fold = cf.stratified_folds(y, 4, 5)
    assert np.bincount(fold).tolist() == [15, 15, 15, 15]
    for f in range(4):
        rest = fold != f
        mu, sd = x[rest].mean(0), x[rest].std(0)
        model = LogisticRegression(C=cf.LINEAR_C, max_iter=200)
        model.fit((x[rest] - mu) / sd, y[rest])
        np.testing.assert_allclose(
            p[fold == f], model.predict_proba((x[fold == f] - mu) / sd), atol=1e-6
        )


def test_stack_weight_maximises_the_held_out_likelihood():
    """Brute force over a fine grid: no weight of the grid beats the chosen one, and a part
    that predicts the given labels perfectly takes the whole weight."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    a, b = rng.dirichlet(np.ones(3), 50), rng.dirichlet(np.ones(3), 50)
    b[np.arange(50), y] += 1.0  # b predicts the given labels better, a is not useless
    b /= b.sum(1, keepdims=True)
    w = cf.stack_weight(a, b, y)

    def loglik(v):
        return np.log(v * a[np.arange(50), y] + (1 - v) * b[np.arange(50), y]).mean()

    assert all(loglik(w) >= loglik(v) - 1e-12 for v in cf.STACK_WEIGHTS)
    assert w < 0.5
    exact = np.eye(3)[y]
    assert cf.stack_weight(exact, a, y) == 1.0
    assert cf.stack_weight(a, exact, y) == 0.0
    assert cf.stack_weight(a, a, y) == 0.5  # a tie goes to the even mix


def test_simplex_grid():
    for parts, count in [(1, 1), (2, 21), (3, 231)]:  # C(20 + parts - 1, parts - 1)
        g = cf.simplex_grid(parts)
        assert g.shape == (count, parts)
        np.testing.assert_allclose(g.sum(1), 1.0, atol=1e-12)
        assert (g >= 0).all() and len(np.unique(np.round(g * 20), axis=0)) == count
        np.testing.assert_allclose(g * 20, np.round(g * 20), atol=1e-9)
    np.testing.assert_allclose(cf.simplex_grid(2)[:, 0], cf.STACK_WEIGHTS, atol=1e-12)


def test_stack_weights_maximise_the_held_out_likelihood_on_the_simplex():
    """Hand-worked: part a gives the given label probability 1 on the first half and 0 on the
    second, part b the reverse, part c 1/3 everywhere. The mean log-likelihood
    0.5 log(w_a + w_c / 3) + 0.5 log(w_b + w_c / 3) is largest at (0.5, 0.5, 0) (the two
    terms' sum 1 - w_c / 3 is split evenly, and w_c only shrinks it): no single part wins.
    A random case is checked against brute force over every grid point."""
    y = np.zeros(10, dtype=int)
    a = np.where(np.arange(10)[:, None] < 5, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    b = a[::-1]
    c = np.full((10, 3), 1 / 3)
    np.testing.assert_allclose(cf.stack_weights([a, b, c], y), [0.5, 0.5, 0.0], atol=1e-12)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 80)
    parts = [rng.dirichlet(np.ones(4), 80) for _ in range(3)]
    parts[1][np.arange(80), y] += 0.5  # one better part, none useless
    parts = [p / p.sum(1, keepdims=True) for p in parts]
    w = cf.stack_weights(parts, y)

    def loglik(v):
        return np.log(sum(vi * p[np.arange(80), y] for vi, p in zip(v, parts))).mean()

    assert all(loglik(w) >= loglik(v) - 1e-12 for v in cf.simplex_grid(3))
    assert w[1] == w.max()
    # identical parts tie everywhere: the weights nearest the even mix
    assert sorted(cf.stack_weights([parts[0]] * 3, y)) == pytest.approx([0.3, 0.35, 0.35])


def test_fast_probs_ensemble_is_the_stacked_mixture():
    x, y = clusters(n_per=20, k=3, d=4, seed=2, spread=1.0)
    knn, lin = cf.knn_probs(x, y, 3), cf.linear_probs(x, y, 3)
    w = cf.stack_weight(knn, lin, y)
    np.testing.assert_allclose(cf.fast_probs(x, y, 3), w * knn + (1 - w) * lin, atol=1e-12)


def test_input_features_pool_large_images():
    imgs = torch.arange(2 * 3 * 64 * 48, dtype=torch.float32).reshape(2, 3, 64, 48)
    f = cf.input_features(imgs, max_side=32)
    assert f.shape == (2, 3 * 32 * 24)
    np.testing.assert_allclose(f[0, 0], imgs[0, 0, :2, :2].mean())
    assert cf.input_features(np.ones((5, 7))).shape == (5, 7)


def test_verdict_and_ranking():
    p = np.array([[0.6, 0.4, 0.0], [0.6, 0.0, 0.4], [0.1, 0.8, 0.1]])
    y = np.array([1, 2, 1])
    suspicion, tiebreak, flagged, suggested = sc.verdict_from_probs(p, y, flag="argmax")
    np.testing.assert_allclose(suspicion, [0.6, 0.6, 0.2])
    assert flagged.tolist() == [True, True, False]
    assert suggested.tolist() == [0, 0, 1]
    # rows 0 and 1 tie on suspicion; the tie-break (1 - normalized margin) is equal too, so
    # position decides; a larger tiebreak goes first
    assert sc.ranking(suspicion, tiebreak).tolist() == [0, 1, 2]
    assert sc.ranking(suspicion, np.array([0.0, 1.0, 0.0])).tolist() == [1, 0, 2]


def test_readme_snippet_runs():
    """The README's find_label_issues example (in "Your own data") runs as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "find_label_issues" in b]
    assert blocks
    exec(compile(blocks[0], "README find_label_issues", "exec"), {"__name__": "readme"})

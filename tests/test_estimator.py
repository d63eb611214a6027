"""`noisytail.NoisyTailClassifier` (issue 11 item 2): scikit-learn's estimator checks, clone,
cross_val_predict, cleanlab's CleanLearning, the input forms, and bad input.

scikit-learn's checks run through `parametrize_with_checks`; which of them apply is decided by
the estimator's tags (a classifier without ``sample_weight`` in ``fit``, no NaN allowed). None is
listed as an expected failure. One is skipped by scikit-learn itself, not by us:
``check_array_api_input`` runs only with ``SCIPY_ARRAY_API=1`` (and array-API libraries) set; the
classifier converts every input to numpy first, so it does not dispatch on other array
namespaces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.model_selection import cross_val_predict
from sklearn.utils.estimator_checks import parametrize_with_checks

from noisytail.data.arrays import arrays_dataset, hold_arrays, load_arrays, release_arrays
from noisytail.estimator import NoisyTailClassifier, load_model

FAST = dict(num_threads=1, precision="fp32", augment="none", batch_size=16)


def small(**kwargs):
    """A classifier that trains in about a second on a hundred samples."""
    return NoisyTailClassifier(**{**FAST, "epochs": 20, **kwargs})


@parametrize_with_checks([small()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n=150, k=3, seed=0):
    x, y = make_blobs(n, centers=k, n_features=5, cluster_std=1.0, random_state=seed)
    return x.astype(np.float32), y


def test_fit_returns_self_and_clone_keeps_params_only():
    x, y = blobs()
    clf = small(loss="ce", method_args={"drw_epoch": None})
    assert clf.fit(x, y) is clf
    assert clf.score(x, y) > 0.9
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert copy.get_params()["method_args"] == {"drw_epoch": None}
    assert not hasattr(copy, "classes_") and not hasattr(copy, "model_")
    copy.set_params(epochs=1, lr=0.01)
    assert (copy.epochs, copy.lr) == (1, 0.01)
    assert clf.epochs == 20


def test_fit_and_predict_leave_torch_globals_alone_and_a_seed_repeats(tmp_path):
    x, y = blobs(n=60)
    threads = torch.get_num_threads()
    caller = 2 if threads == 1 else threads  # differs from FAST's num_threads=1
    torch.set_num_threads(caller)
    try:
        torch.manual_seed(1234)
        state = torch.get_rng_state()
        first = small(epochs=3, seed=7, run_dir=str(tmp_path)).fit(x, y)
        assert torch.get_num_threads() == caller
        assert torch.equal(torch.get_rng_state(), state)
        probs = first.predict_proba(x)
        np.testing.assert_array_equal(load_model(tmp_path).predict_proba(x), probs)
        assert torch.get_num_threads() == caller
        assert torch.equal(torch.get_rng_state(), state)
        again = small(epochs=3, seed=7).fit(x, y).predict_proba(x)
        other = small(epochs=3, seed=8).fit(x, y).predict_proba(x)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(again, probs)
    assert not np.allclose(other, probs)


def test_numpy_scalar_parameters_train_as_python_numbers_do(tmp_path):
    # a parameter grid over np.arange or a seed from rng.integers hands out NumPy scalars
    x, y = blobs(n=60)
    plain = dict(seed=3, epochs=2, lr=0.05, method_args={"drw_epoch": 1, "drw_beta": 0.99})
    numpy = dict(
        seed=np.int64(3),
        epochs=np.int32(2),
        lr=np.float64(0.05),
        method_args={"drw_epoch": np.int64(1), "drw_beta": np.float64(0.99)},
    )
    expected = small(loss="ce", **plain).fit(x, y).predict_proba(x)
    got = small(loss="ce", run_dir=str(tmp_path), **numpy).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(got, expected)
    assert "!!python" not in (tmp_path / "config.yaml").read_text()
    loaded = load_model(tmp_path)  # the parameters come back as numbers: it can fit again
    assert loaded.get_params()["seed"] == 3 and loaded.get_params()["epochs"] == 2
    np.testing.assert_array_equal(loaded.fit(x, y).predict_proba(x), expected)


def test_load_model_names_a_damaged_estimator_file(tmp_path):
    from noisytail.runfolder import CheckpointError

    x, y = blobs(n=60)
    small(epochs=1, run_dir=str(tmp_path)).fit(x, y)
    for text in ("{not json", '{"classes": [0, 1, 2]}', '{"params": {"bogus": 1}, "classes": []}'):
        (tmp_path / "estimator.json").write_text(text)
        with pytest.raises(CheckpointError, match="estimator.json: not an estimator file"):
            load_model(tmp_path)


def test_fit_again_into_the_same_run_dir_replaces_its_own_run(tmp_path):
    x, y = blobs(n=60)
    run = tmp_path / "run"
    clf = small(epochs=2, seed=1, run_dir=str(run)).fit(x, y)
    clf.set_params(seed=2).fit(x, y)  # scikit-learn's contract: fit may be called again
    np.testing.assert_array_equal(load_model(run).predict_proba(x), clf.predict_proba(x))
    assert '"seed": 2' in (run / "estimator.json").read_text()
    # clones made by cross-validation share the folder; the last fit is the one kept
    probs = cross_val_predict(clf, x, y, cv=2, method="predict_proba")
    assert probs.shape == (60, 3) and (run / "estimator.json").is_file()
    # a failed fit leaves the earlier run as it was, and nothing beside it
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match="no_such_method"):
        clone(clf).set_params(method="no_such_method").fit(x, y)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_fit_does_not_replace_a_folder_that_holds_other_files(tmp_path):
    x, y = blobs(n=60)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a run of NoisyTailClassifier"):
        small(epochs=1, run_dir=str(theirs)).fit(x, y)
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    run = tmp_path / "run"
    small(epochs=1, run_dir=str(run)).fit(x, y)
    (run / "notes.txt").write_text("mine")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(ValueError, match="'notes.txt', which is not part of a run"):
        small(epochs=1, seed=5, run_dir=str(run)).fit(x, y)
    assert sorted(p.name for p in run.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "theirs"]
    # a file of the user's deeper inside the run is theirs too; the estimator keeps its own
    # fitted model and labels when the refit is refused (before any training)
    (run / "notes.txt").unlink()
    clf = small(epochs=1, run_dir=str(run)).fit(x, np.array(["a", "b", "c"])[y])
    mine = run / "checkpoints" / "my_finetuned.pt"
    mine.write_bytes(b"mine")
    model, classes = clf.model_, clf.classes_
    with pytest.raises(ValueError, match="'checkpoints/my_finetuned.pt', which is not part"):
        clf.fit(x[y < 2], np.array(["p", "q"])[y[y < 2]])
    assert mine.read_bytes() == b"mine"
    assert clf.model_ is model and clf.classes_.tolist() == classes.tolist() == ["a", "b", "c"]
    assert clf.predict(x).tolist() == load_model(run).predict(x).tolist()


def test_the_default_budget_and_model_scale_with_the_data():
    """``epochs="auto"``: about FIT_STEPS = 1,200 steps of 128 within 10-40 epochs (hand-worked:
    4,084 samples make 32 steps, ceil(1200 / 32) = 38 epochs); images get the narrower CNN
    whatever their number, tables the CLI's MLP rule."""
    clf = NoisyTailClassifier()
    images = np.zeros((4084, 1, 28, 28), np.uint8)
    values = clf.config_values("k", images)
    assert values["train"]["epochs"] == 38
    assert values["model"] == {"name": "small_cnn", "options": {"width": 16}}
    assert values["method"] == {"name": "erm", "loss": "sce"}
    assert clf.config_values("k", images[:300])["train"]["epochs"] == 40  # 3 steps: the cap
    assert clf.config_values("k", np.zeros((60_000, 1, 4, 4)))["train"]["epochs"] == 10
    table = clf.config_values("k", np.zeros((4084, 5), np.float32))["model"]
    assert table == {"name": "mlp", "options": {}}
    assert clf.set_params(epochs=3).config_values("k", images)["train"]["epochs"] == 3


def test_string_labels_are_encoded_as_sklearn_does():
    x, y = blobs()
    names = np.array(["zebra", "ant", "moth"])[y]
    clf = small().fit(x, names)
    assert list(clf.classes_) == ["ant", "moth", "zebra"]  # sorted, like LabelEncoder
    pred = clf.predict(x)
    assert set(pred) <= set(names)
    assert (pred == names).mean() > 0.9
    proba = clf.predict_proba(x)
    assert np.array_equal(clf.classes_[proba.argmax(1)], pred)


def test_cross_val_predict_gives_out_of_sample_probabilities():
    x, y = blobs(n=120)
    probs = cross_val_predict(small(), x, y, cv=3, method="predict_proba")
    assert probs.shape == (120, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
    assert (probs.argmax(1) == y).mean() > 0.9


def test_clean_learning_finds_the_flipped_labels():
    cleanlab = pytest.importorskip("cleanlab.classification")
    x, y = blobs(n=240, k=3, seed=1)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), size=36, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 3, size=36)) % 3
    cl = cleanlab.CleanLearning(small(), seed=0, cv_n_folds=3)
    cl.fit(x, noisy)
    issues = cl.get_label_issues()
    found = np.flatnonzero(issues["is_label_issue"].to_numpy())
    truly = np.isin(found, flipped).mean()
    assert len(found) >= 18 and truly > 0.8, (len(found), truly)
    assert (cl.predict(x) == y).mean() > 0.9


def _images(n=90, size=10, channels=None, seed=0):
    """Three classes told apart by brightness: uint8 [N, H, W] (or [N, H, W, C])."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    base = np.array([40, 128, 215])[y].astype(float)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    noise = rng.normal(0, 15, size=shape)
    x = np.clip(base.reshape((n,) + (1,) * (len(shape) - 1)) + noise, 0, 255).astype(np.uint8)
    return x, y


@pytest.mark.parametrize(
    "form",
    ["uint8 NxHxW", "float NxHxWxC", "uint8 NxHxWx3", "paths"],
)
def test_image_inputs(form, tmp_path):
    channels = {"uint8 NxHxW": None, "float NxHxWxC": 1, "uint8 NxHxWx3": 3, "paths": 3}[form]
    x, y = _images(channels=channels)
    if form.startswith("float"):
        x = x.astype(np.float32) / 255.0
    if form == "paths":
        files = []
        for i, img in enumerate(x):
            files.append(str(tmp_path / f"{i}.png"))
            Image.fromarray(img).save(files[-1])
        x = files
    clf = small(epochs=15).fit(x, y)
    expected = {None: (1, 10, 10), 1: (1, 10, 10), 3: (3, 10, 10)}[channels]
    assert clf.input_shape_ == expected
    assert clf.model_.model.__class__.__name__ == "SmallCNN"
    assert not hasattr(clf, "n_features_in_")
    assert clf.score(x, y) > 0.9
    if form == "paths":  # an array of paths, as a DataFrame column gives them, is paths too
        np.testing.assert_array_equal(clf.predict_proba(np.array(x)), clf.predict_proba(x))


def test_the_arrays_source_can_be_used_twice_and_forgets():
    x, y = _images(n=30)
    keys = [hold_arrays(x, y), hold_arrays(x, y)]  # no "already registered"
    assert keys[0] != keys[1]
    for key in keys:
        bundle = load_arrays(key=key)
        assert bundle.input_shape == (1, 10, 10) and bundle.num_classes == 3
        assert bundle.train.images.data.dtype.is_floating_point is False  # uint8 kept
        release_arrays(key)
    with pytest.raises(ValueError, match="no arrays are held under key"):
        load_arrays(key=keys[0])
    with arrays_dataset(x.astype(np.float32) / 255, y) as key:
        bundle = load_arrays(key=key)
        pixels = bundle.train.images.data
        # float inputs are standardised per channel with the recorded statistics
        assert abs(float(pixels.mean())) < 1e-4 and abs(float(pixels.std()) - 1) < 1e-2
        assert len(bundle.test) <= 256
    with pytest.raises(ValueError, match="no arrays"):
        load_arrays(key=key)


X_OK, Y_OK = blobs(n=30)
BAD_FIT = [
    ("1-D X", np.zeros(30), Y_OK, "Reshape your data"),
    ("5-D X", np.zeros((30, 2, 2, 2, 2)), Y_OK, r"expected \[N, D\] features"),
    ("5 channels last", np.zeros((30, 6, 6, 5), np.uint8), Y_OK, "1 to 4 channels"),
    ("NaN", np.where(np.arange(150).reshape(30, 5) == 17, np.nan, 1.0), Y_OK, "sample 3"),
    ("strings", np.full((30, 5), "a"), Y_OK, "expected numbers"),
    ("ints outside 0..255", np.full((30, 6, 6), 300), Y_OK, "outside 0..255"),
    ("one class", X_OK, np.zeros(30), "1 class"),
    ("labels of another length", X_OK, Y_OK[:20], r"expected one label per sample"),
    ("continuous labels", X_OK, np.linspace(0, 1, 30), "Unknown label type"),
    ("y missing", X_OK, None, "requires y"),
]


@pytest.mark.parametrize("x, y, message", [b[1:] for b in BAD_FIT], ids=[b[0] for b in BAD_FIT])
def test_bad_input_to_fit_is_a_value_error_naming_it(x, y, message):
    with pytest.raises(ValueError, match=message):
        small(epochs=1).fit(x, y)


def test_bad_input_to_predict_names_the_expected_shape():
    x, y = _images(n=30)
    clf = small(epochs=1).fit(x, y)
    with pytest.raises(ValueError, match=r"12x12 grayscale .* takes 10x10 grayscale"):
        clf.predict(_images(n=4, size=12)[0])
    with pytest.raises(ValueError, match=r"10x10 RGB \(3 channels\).* 10x10 grayscale"):
        clf.predict(_images(n=4, channels=3)[0])
    tab = small(epochs=1).fit(*blobs(n=30))
    expected = "X has 4 features, but NoisyTailClassifier is expecting 5"
    with pytest.raises(ValueError, match=expected):
        tab.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"NaN or infinity \(first in sample 1\)"):
        tab.predict_proba(np.where(np.arange(10).reshape(2, 5) == 7, np.nan, 0.0))
    with pytest.raises(ValueError, match="expected numbers"):
        tab.predict(np.full((2, 5), "a"))
    with pytest.raises(ValueError, match="unknown method|Unknown method"):
        small(method="ermm", epochs=1).fit(*blobs(n=30))


def test_dataframe_columns_are_checked_at_predict_and_saved_with_the_run(tmp_path):
    # columns in another order must not be read by position (as scikit-learn's own refuse)
    pd = pytest.importorskip("pandas")
    x, y = blobs(n=60)
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d", "e"])
    clf = small(epochs=2, run_dir=str(tmp_path / "run")).fit(frame, y)
    assert clf.feature_names_in_.tolist() == ["a", "b", "c", "d", "e"]
    probs = clf.predict_proba(frame)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(frame[["e", "d", "c", "b", "a"]])
    loaded = load_model(tmp_path / "run")
    assert loaded.feature_names_in_.tolist() == ["a", "b", "c", "d", "e"]
    np.testing.assert_allclose(loaded.predict_proba(frame), probs, atol=1e-12)
    # the command line reads a CSV of these rows by the column names, in any order
    rows = tmp_path / "rows.csv"
    frame[["e", "c", "a", "b", "d"]].head(5).to_csv(rows, index=False)
    from click.testing import CliRunner

    from noisytail.cli import main

    out = tmp_path / "run" / "p.csv"
    result = CliRunner().invoke(
        main, ["predict", str(tmp_path / "run"), "--images", str(rows), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    got = pd.read_csv(out, dtype=str)["class"].tolist()
    assert got == [str(c) for c in clf.predict(frame.head(5))]
    assert not hasattr(small(epochs=1).fit(x, y), "feature_names_in_")  # plain arrays: none

"""``noisytail detect`` on a user's own folder or CSV: every input row scored once, each row of
label_issues.csv joins back to its input, no ties, and the cleaned copy accounts for every row."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from noisytail.config import load_config
from noisytail.detect import detect_label_issues


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_image_of_a_folder_scored_once(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    files = []
    for c, name in enumerate(["a", "b", "c"]):
        (root / name).mkdir(parents=True)
        for i in range(12 + 4 * c):
            pixels = np.clip(60 * c + 40 + rng.normal(0, 20, (28, 28)), 0, 255).astype(np.uint8)
            path = root / name / f"{i:02d}.png"
            Image.fromarray(pixels).save(path)
            files.append(str(path))
    cfg = load_config(None, ["data.name=image_folder", f"data.root={root}"])
    out = tmp_path / "out"
    result = detect_label_issues(cfg, out)
    rows = read_rows(out / "label_issues.csv")
    assert result.detector == "auto"
    assert len(rows) == result.n == len(files)  # no test or validation split taken
    assert sorted(r["path"] for r in rows) == sorted(files)
    for r in rows:  # each row names its input, with the folder it came from as given label
        assert r["given_label"] == r["path"].split("/")[-2]
        assert r["row"] == ""
    scores = [float(r["score"]) for r in rows]
    assert len(set(scores)) == len(scores)  # distinct images, distinct scores
    assert scores == sorted(scores, reverse=True)
    assert json.loads((out / "detection.json").read_text())["whole_data"] is True


def test_every_csv_row_scored_and_joined_back(tmp_path):
    rng = np.random.default_rng(1)
    names = np.array(["cat", "dog", "owl"])
    true = np.repeat(np.arange(3), [50, 30, 20])
    x = np.eye(3, 5)[true] * 5 + rng.normal(size=(100, 5))
    given = true.copy()
    flips = np.array([3, 55, 71, 90])
    given[flips] = (true[flips] + 1) % 3
    manifest = tmp_path / "table.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["f0", "f1", "f2", "f3", "f4", "label"])
        for i, (row, y) in enumerate(zip(x, given)):
            w.writerow([f"{v:.6f}" for v in row] + [names[y]])
            if i == 10:
                w.writerow([])  # a blank line is not a row (as pandas.read_csv)
    cfg = load_config(None, ["data.name=csv", f"data.options.train_csv={manifest}"])
    out = tmp_path / "out"
    result = detect_label_issues(cfg, out, clean_csv=True)
    rows = read_rows(out / "label_issues.csv")
    assert len(rows) == result.n == 100
    assert sorted(int(r["row"]) for r in rows) == list(range(100))
    for r in rows:  # the 0-based data row of the user's file holds that label and those values
        i = int(r["row"])
        assert r["given_label"] == names[given[i]]
    assert {int(r["row"]) for r in rows[:4]} == set(flips.tolist())
    scores = [float(r["score"]) for r in rows]
    assert len(set(scores)) == 100
    # the cleaned copy: every row kept except the flagged ones, which are the flips
    flagged = sorted(int(r["row"]) for r in rows if r["flagged"] == "1")
    assert flagged == sorted(flips.tolist())
    kept = read_rows(result.files["cleaned_csv"])
    assert len(kept) + len(flagged) == 100
    kept_values = {r["f0"] for r in kept}
    assert all(f"{x[i, 0]:.6f}" not in kept_values for i in flagged)
    assert result.cleaned == {
        "file": str(result.files["cleaned_csv"]),
        "rows": 100,
        "dropped": 4,
        "kept": 96,
        "not_checked": 0,
    }


def test_csv_rows_through_a_subset(tmp_path):
    """With data.train_subset the pool is a part of the file: each row still names its own
    0-based data row, and the cleaned copy keeps the rows not checked."""
    rng = np.random.default_rng(2)
    labels = rng.permutation(np.repeat(np.arange(4), 30))
    x = np.eye(4, 6)[labels] * 4 + rng.normal(size=(120, 6))
    manifest = tmp_path / "t.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id"] + [f"f{j}" for j in range(6)] + ["label"])
        for i, (row, y) in enumerate(zip(x, labels)):
            w.writerow([i] + [f"{v:.5f}" for v in row] + [int(y)])
    cfg = load_config(
        None, ["data.name=csv", f"data.options.train_csv={manifest}", "data.train_subset=40"]
    )
    result = detect_label_issues(cfg, tmp_path / "out", clean_csv=True)
    rows = read_rows(tmp_path / "out" / "label_issues.csv")
    assert len(rows) == result.n == 40
    checked = [int(r["row"]) for r in rows]
    assert len(set(checked)) == 40
    for r in rows:
        assert int(r["given_label"]) == labels[int(r["row"])]
    assert sorted(checked) != list(range(40))  # a stratified subset, not the first 40 rows
    assert result.cleaned["rows"] == 120 and result.cleaned["not_checked"] == 80
    kept_ids = {int(r["id"]) for r in read_rows(result.files["cleaned_csv"])}
    flagged = {int(r["row"]) for r in rows if r["flagged"] == "1"}
    assert kept_ids == set(range(120)) - flagged


def test_a_class_smaller_than_the_folds_is_refused(tmp_path):
    import pytest

    from noisytail.data.types import DataError

    manifest = tmp_path / "t.csv"
    rng = np.random.default_rng(3)
    lines = ["a,b,label"] + [
        f"{v:.3f},{w:.3f},{c}"
        for v, w, c in zip(
            rng.normal(size=23), rng.normal(size=23), ["x"] * 10 + ["y"] * 10 + ["z"] * 3
        )
    ]
    manifest.write_text("\n".join(lines) + "\n")
    cfg = load_config(None, ["data.name=csv", f"data.options.train_csv={manifest}"])
    with pytest.raises(DataError, match=r"Class 'z' has 3 sample.*5 folds.*--arg folds=N"):
        detect_label_issues(cfg, tmp_path / "out")
    # confident learning cross-fits too: an unseen class's threshold would be near 0
    with pytest.raises(DataError, match=r"confident_learning: Class 'z' has 3 sample.*5 folds"):
        detect_label_issues(cfg, tmp_path / "out", detector="confident_learning")
    result = detect_label_issues(cfg, tmp_path / "out", detector_args={"folds": 3})
    assert result.n == 23


def test_detection_json_records_the_stacking_weight(tmp_path):
    """On XOR quadrants (the class is the sign of a * b) a linear model cannot separate the
    classes and the cosine kNN can, so the held-out likelihood gives the kNN most of the
    weight; detection.json says so, with weights of the simplex grid
    (`crossfit.simplex_grid`) for the three parts of a table (kNN, linear model, network)."""
    from noisytail.detect import crossfit as cf

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(120, 2))
    x += 0.3 * np.sign(x)  # a gap between the quadrants
    y = (x[:, 0] * x[:, 1] > 0).astype(int)
    table = tmp_path / "xor.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "label"])
        for row, c in zip(x, y):
            w.writerow([f"{v:.6f}" for v in row] + [int(c)])
    out = tmp_path / "out"
    cfg = load_config(None, ["data.name=csv", f"data.options.train_csv={table}"])
    detect_label_issues(cfg, out)
    details = json.loads((out / "detection.json").read_text())["details"]
    weights = [details[f"{part}_weight"] for part in ("knn", "linear", "network")]
    assert np.isclose(cf.simplex_grid(3), weights, rtol=0, atol=1e-6).all(1).any()
    assert details["knn_weight"] >= 0.7 and details["linear_weight"] <= 0.1


def test_fast_parts_name_their_part_and_stack_mixes_them():
    from noisytail.detect import crossfit as cf

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 15)
    x = np.eye(3, 4)[y] + rng.normal(size=(45, 4))
    knn, lin = cf.knn_probs(x, y, 3), cf.linear_probs(x, y, 3)
    assert list(cf.fast_parts(x, y, 3, model="knn")) == ["knn"]
    assert list(cf.fast_parts(x, y, 3, model="linear")) == ["linear"]
    parts = cf.fast_parts(x, y, 3)
    probs, weights = cf.stack(parts, y)
    # the weights with the class prior as a third part, the prior's dropped, renormalised
    prior = np.broadcast_to(np.bincount(y) / len(y), knn.shape)
    w_knn, w_lin, _ = cf.stack_weights([knn, lin, prior], y)
    w = w_knn / (w_knn + w_lin)
    assert weights == {"knn": pytest.approx(w), "linear": pytest.approx(1 - w)}
    np.testing.assert_allclose(probs, w * knn + (1 - w) * lin, atol=1e-12)
    np.testing.assert_allclose(cf.fast_probs(x, y, 3), probs, atol=0)
    assert cf.stack({"knn": knn}, y)[1] == {"knn": 1.0}


def test_a_part_at_chance_gets_no_weight_for_smoothing_alone():
    """An informative but overconfident part (0.98 on the given label of 80 % of the samples,
    0.01 on it for the 20 % it gets wrong) and a part at chance that only knows the class
    frequencies: without the prior the stack gives the useless part weight, as a smoother; with
    it (`stack`) the useless part gets none and the mixture is the informative part."""
    from noisytail.detect import crossfit as cf

    rng = np.random.default_rng(0)
    n, k = 400, 2
    y = rng.integers(0, k, n)
    right = rng.random(n) < 0.8
    good = np.full((n, k), 0.02)
    good[np.arange(n), np.where(right, y, 1 - y)] = 0.98
    chance = np.broadcast_to(np.bincount(y, minlength=k) / n, (n, k)) + rng.normal(
        0, 0.01, (n, 1)
    ) * [1, -1]
    assert cf.stack_weights([good, chance], y)[1] >= 0.2  # the old rule: a smoother
    probs, weights = cf.stack({"good": good, "chance": chance}, y)
    assert weights == {"good": 1.0, "chance": 0.0}
    np.testing.assert_allclose(probs, good, atol=0)
    # where every part is at chance, the prior alone is best: the weights without it
    only = cf.stack({"a": chance, "b": chance[::-1].copy()}, y)[1]
    assert sum(only.values()) == pytest.approx(1.0)


def test_the_network_part_is_out_of_sample(tmp_path, monkeypatch):
    """`DetectionTask.crossfit_probs` (the default detector's network part on tables): with the
    folds held fixed, flipping one sample's label leaves that sample's probabilities bit for bit
    as they were (no model that scored it saw its label), while the other folds' models, which
    trained on it, change."""
    from noisytail.config import validate
    from noisytail.data.prepare import prepare_data
    from noisytail.detect import crossfit as cf
    from noisytail.detect.base import DetectionTask
    from noisytail.detect.task import whole_data_config
    from noisytail.runtime import setup_runtime

    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(2), 20)
    x = np.eye(2, 3)[y] * 2 + rng.normal(size=(40, 3))
    monkeypatch.setattr(cf, "stratified_folds", lambda labels, folds, seed: np.arange(40) % folds)

    def probs(labels, name):
        table = tmp_path / f"{name}.csv"
        with open(table, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["a", "b", "c", "label"])
            for row, c in zip(x, labels):
                w.writerow([f"{v:.6f}" for v in row] + [int(c)])
        over = ["data.name=csv", f"data.options.train_csv={table}", "model.name=mlp"]
        cfg = whole_data_config(load_config(None, over + ["train.epochs=3"]))
        validate(cfg)
        task = DetectionTask(cfg, prepare_data(cfg), setup_runtime(cfg), tmp_path / name)
        assert (task.labels == labels).all()
        return task.crossfit_probs(4)

    flipped = y.copy()
    flipped[5] = 1 - y[5]  # sample 5 lies in fold 1
    before, after = probs(y, "given"), probs(flipped, "flipped")
    np.testing.assert_allclose(before.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(after[5], before[5])
    others = np.arange(40) % 4 != 1
    assert np.abs(after[others] - before[others]).max() > 1e-4


def test_the_network_part_runs_on_one_thread_unless_set(tmp_path, monkeypatch):
    """With ``train.num_threads`` unset, the default detector trains its network part on
    `detectors.NETWORK_THREADS` PyTorch thread and gives the caller its thread count back."""
    import torch

    from noisytail.detect import detectors
    from noisytail.detect.base import DetectionTask

    seen = []

    def fake(self, folds, cfg=None):
        seen.append(torch.get_num_threads())
        return np.full((len(self.labels), self.num_classes), 1.0 / self.num_classes)

    monkeypatch.setattr(DetectionTask, "crossfit_probs", fake)
    rng = np.random.default_rng(5)
    table = tmp_path / "t.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "label"])
        for i in range(30):
            w.writerow([f"{v:.4f}" for v in rng.normal(size=2) + i % 2] + [i % 2])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = load_config(None, ["data.name=csv", f"data.options.train_csv={table}"])
        detect_label_issues(cfg, tmp_path / "out")
        assert set(seen) == {detectors.NETWORK_THREADS} == {1}  # both budgets (a small table)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_best_by_likelihood_hand_worked():
    """Mean log p_y of labels [0, 1]: (log 0.9 + log 0.5) / 2 = -0.399 for the first array,
    (log 0.6 + log 0.8) / 2 = -0.367 for the second, so the second wins; a tie keeps the first."""
    from noisytail.detect import crossfit as cf

    y = np.array([0, 1])
    a = np.array([[0.9, 0.1], [0.5, 0.5]])
    b = np.array([[0.6, 0.4], [0.2, 0.8]])
    assert cf.held_out_log_likelihood(a, y) == pytest.approx((np.log(0.9) + np.log(0.5)) / 2)
    assert cf.best_by_likelihood([a, b], y) == 1
    assert cf.best_by_likelihood([b, a], y) == 0
    assert cf.best_by_likelihood([a, a.copy()], y) == 0


def test_longer_budget_only_for_a_short_chosen_budget():
    """`defaults.longer_budget`: 4x the epochs when they were chosen from the data and give
    fewer than TARGET_STEPS = 400 steps (120 samples: 1 step of 128 a epoch, 40 steps; 455: 4 a
    epoch, 160; 960: 8 a epoch, 320); none for 1,280 samples (400 steps), for 1,920 samples at
    27 epochs (405) nor for epochs the user set."""
    from noisytail import defaults
    from noisytail.config import from_dict

    chosen = from_dict({"train": {"epochs": 40}, "inferred": {"train.epochs": "40 (data)"}})
    assert defaults.longer_budget(chosen, 120).train.epochs == 160
    assert defaults.longer_budget(chosen, 455).train.epochs == 160
    assert "x4" in defaults.longer_budget(chosen, 455).inferred["train.epochs"]
    assert defaults.longer_budget(chosen, 960).train.epochs == 160
    assert (
        "320 steps on 960 samples < 400"
        in defaults.longer_budget(chosen, 960).inferred["train.epochs"]
    )
    assert defaults.longer_budget(chosen, 1280) is None
    at_27 = from_dict({"train": {"epochs": 27}, "inferred": {"train.epochs": "27 (data)"}})
    assert defaults.longer_budget(at_27, 1920) is None
    assert defaults.longer_budget(from_dict({"train": {"epochs": 40}}), 120) is None


@pytest.mark.parametrize("better", ["short", "long"])
def test_the_network_budget_with_the_higher_held_out_likelihood_is_kept(
    tmp_path, monkeypatch, better
):
    """On a small table the default detector cross-fits its network at the chosen budget and at
    4x its epochs and keeps the one whose out-of-sample probabilities give the given labels the
    higher likelihood (recorded in detection.json); with ``train.epochs`` set by the user, one
    budget only."""
    from noisytail.detect.base import DetectionTask

    seen = []

    def fake(self, folds, cfg=None):
        seen.append(cfg.train.epochs)
        probs = np.full((len(self.labels), self.num_classes), 1.0 / self.num_classes)
        if (len(seen) == 1) == (better == "short"):
            probs = 0.8 * np.eye(self.num_classes)[self.labels] + 0.2 * probs
        return probs

    monkeypatch.setattr(DetectionTask, "crossfit_probs", fake)
    rng = np.random.default_rng(6)
    table = tmp_path / "t.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "label"])
        for i in range(40):
            w.writerow([f"{v:.4f}" for v in rng.normal(size=2) + i % 2] + [i % 2])
    over = ["data.name=csv", f"data.options.train_csv={table}"]
    detect_label_issues(load_config(None, over), tmp_path / "out")
    network = json.loads((tmp_path / "out" / "detection.json").read_text())["details"]["network"]
    assert seen == network["epochs_tried"] == [40, 160]  # 32 rows a fold: 40 steps of 128
    assert network["epochs"] == (40 if better == "short" else 160)
    ll = network["held_out_log_likelihood"]
    assert (ll[0] > ll[1]) == (better == "short")
    seen.clear()
    explicit = over + ["model.name=mlp", "train.epochs=7"]
    detect_label_issues(load_config(None, explicit), tmp_path / "set")
    assert seen == [7]


def test_csv_rows_with_checked_rows_held_out(tmp_path):
    """meta.source=file takes the checked rows out of the pool: each scored sample still names
    its own data row, and the cleaned copy drops the flagged rows, not their neighbours."""
    rng = np.random.default_rng(0)
    true = np.repeat([0, 1], 12)
    x = rng.normal(size=(24, 2)) * 0.3 + true[:, None] * 5
    given = true.copy()
    given[[8, 20]] = 1 - true[[8, 20]]
    manifest, checked = tmp_path / "t.csv", tmp_path / "checked.csv"
    for path, rows in ((manifest, range(24)), (checked, (0, 1, 2))):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["a", "b", "label"])
            for i in rows:
                w.writerow([f"{v:.4f}" for v in x[i]] + [int(given[i])])
    cfg = load_config(
        None,
        [
            "data.name=csv",
            f"data.options.train_csv={manifest}",
            "meta.source=file",
            f"meta.file={checked}",
        ],
    )
    knn = {"space": "input", "k": 5}
    out = tmp_path / "out"
    result = detect_label_issues(cfg, out, detector="knn", detector_args=knn, clean_csv=True)
    rows = read_rows(tmp_path / "out" / "label_issues.csv")
    assert sorted(int(r["row"]) for r in rows) == list(range(3, 24))
    for r in rows:
        assert int(r["given_label"]) == given[int(r["row"])]
    assert {int(r["row"]) for r in rows if r["flagged"] == "1"} == {8, 20}
    kept = {r["a"] for r in read_rows(result.files["cleaned_csv"])}
    assert kept == {f"{x[i, 0]:.4f}" for i in range(24) if i not in (8, 20)}
    assert result.cleaned["not_checked"] == 3


def test_a_file_name_that_is_not_utf8_is_scored_and_written_as_its_bytes(tmp_path):
    # a zip made on Windows and unpacked with unzip leaves names like b"caf\xe9.png"
    import os

    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for c, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(100 * c + 60 + rng.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    odd = os.path.join(os.fsencode(root / "a"), b"caf\xe9.png")
    os.rename(os.fsencode(root / "a" / "0.png"), odd)
    cfg = load_config(None, ["data.name=image_folder", f"data.root={root}"])
    out = tmp_path / "out"
    knn = {"space": "input", "k": 3}
    result = detect_label_issues(cfg, out, detector="knn", detector_args=knn)
    assert result.n == 16
    written = (out / "label_issues.csv").read_bytes().splitlines()
    assert sum(odd in line for line in written) == 1  # the name as it is on disk


def test_an_imbalance_setting_does_not_drop_rows_of_the_users_data(tmp_path, caplog):
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], 12)
    rows = ["a,b,label"] + [
        f"{v:.4f},{w:.4f},{c}" for (v, w), c in zip(rng.normal(size=(24, 2)) + 3 * y[:, None], y)
    ]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    cfg = load_config(
        None, ["data.name=csv", f"data.options.train_csv={tmp_path / 't.csv'}", "imbalance.ratio=4"]
    )
    knn = {"space": "input", "k": 3}
    with caplog.at_level("WARNING"):
        result = detect_label_issues(cfg, tmp_path / "out", detector="knn", detector_args=knn)
    assert result.n == 24
    assert sorted(int(r["row"]) for r in read_rows(tmp_path / "out" / "label_issues.csv")) == list(
        range(24)
    )
    assert "imbalance (ratio 4) is not applied" in caplog.text

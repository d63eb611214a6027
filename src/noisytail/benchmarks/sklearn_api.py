"""`NoisyTailClassifier` inside cleanlab's `CleanLearning`, against
``CleanLearning(LogisticRegression())`` and against noisytail's own training loop, on one noisy
long-tailed data set (issue 11, "What must be shown"); driven by ``scripts/bench_sklearn.py``.

The data are `prepare_data`'s for the config of `Setting.config`: a stratified Fashion-MNIST
subset made long-tailed (exponential profile) with symmetric noise, and the balanced clean test
subset. Every contender sees the same noisy training images and labels:

- ``cleanlab+noisytail``: ``CleanLearning(NoisyTailClassifier())`` with the classifier's defaults
  (its robust method, model and budget chosen from the data; ``Setting.epochs`` overrides the
  budget), ``cv_n_folds`` cross-validated probabilities, then a fit on the samples CleanLearning
  keeps;
- ``cleanlab+logreg``: ``CleanLearning(LogisticRegression())`` on the flattened pixels / 255;
- ``noisytail classifier``: ``NoisyTailClassifier`` alone on all noisy samples;
- ``noisytail train``: `noisytail.train.fit` with the settings the classifier chooses for these
  images (`train_config`; what ``noisytail train`` runs with them);
- ``... mlp``: the first and third with ``model="mlp"`` (hidden 256, 256) in place of the CNN the
  classifier chooses for images.

Each row: test accuracy and balanced accuracy on the clean test set, wall time, and for the
CleanLearning rows how many samples were dropped and which fraction of them had wrong labels.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from noisytail.config import Config, load_config

CONTENDERS = (
    "cleanlab+noisytail",
    "cleanlab+logreg",
    "noisytail classifier",
    "noisytail train",
    "cleanlab+noisytail mlp",
    "noisytail classifier mlp",
)


@dataclass(frozen=True)
class Setting:
    """One benchmark setting (defaults: the command in BENCHMARKS.md)."""

    train_subset: int = 10000
    test_subset: int = 5000
    imbalance: float = 10.0
    noise: str = "symmetric"
    rate: float = 0.4
    epochs: int | None = None  # None: the classifier's default budget (epochs="auto")
    folds: int = 3
    seed: int = 0

    def classifier(self, **args: Any) -> Any:
        """The `NoisyTailClassifier` of this setting: its defaults, ``epochs`` if given, and
        ``args``."""
        from noisytail.estimator import NoisyTailClassifier

        given = {} if self.epochs is None else {"epochs": self.epochs}
        return NoisyTailClassifier(seed=self.seed, **given, **args)

    def config(self) -> Config:
        """The data of this setting as a `noisytail train` config (the data and seed only)."""
        return load_config(
            None,
            [
                "data.name=fashion_mnist",
                f"data.train_subset={self.train_subset}",
                f"data.test_subset={self.test_subset}",
                "data.val_fraction=0",
                f"imbalance.ratio={self.imbalance}",
                f"noise.kind={self.noise}",
                f"noise.rate={self.rate}",
                f"seed={self.seed}",
                "train.progress=false",
            ],
        )


def train_config(s: Setting, d: Data) -> Config:
    """`Setting.config` with the method, model, training settings and augmentation that
    ``s.classifier()`` chooses for the training images of ``d``
    (`noisytail.estimator.NoisyTailClassifier.config_values`)."""
    from noisytail.config import from_dict
    from noisytail.data.arrays import as_model_inputs

    chosen = s.classifier().config_values("unused", as_model_inputs(d.x, "X"))
    skip = ("progress", "checkpoint_every", "num_threads")
    values = {
        "model": chosen["model"],
        "method": chosen["method"],
        "train": {k: v for k, v in chosen["train"].items() if k not in skip},
        "data": {"augment": chosen["data"]["augment"]},
    }
    return from_dict(values, s.config())


@dataclass
class Data:
    """The noisy long-tailed training set and the clean test set, as numpy arrays."""

    x: np.ndarray  # uint8 [N, 28, 28]
    y: np.ndarray  # noisy labels [N]
    y_true: np.ndarray  # [N]
    x_test: np.ndarray  # uint8 [M, 28, 28]
    y_test: np.ndarray  # [M]


def load_data(s: Setting) -> Data:
    from noisytail.data.prepare import prepare_data

    prepared = prepare_data(s.config())
    corr, bundle = prepared.corruption, prepared.bundle
    idx = corr.train_idx
    x = bundle.train.images.get(idx).numpy()[:, 0]
    x_test = bundle.test.images.get(np.arange(len(bundle.test))).numpy()[:, 0]
    return Data(x, corr.noisy_labels[idx], corr.true_labels[idx], x_test, bundle.test.labels)


def _scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    recall = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return {"accuracy": float((pred == y).mean()), "balanced_accuracy": float(np.mean(recall))}


def run_one(name: str, s: Setting, d: Data) -> dict[str, Any]:
    """Train contender ``name`` on ``d`` and score it on the clean test set."""
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    args = {"model": "mlp"} if name.endswith(" mlp") else {}
    if name.startswith("cleanlab"):
        from cleanlab.classification import CleanLearning

        if name == "cleanlab+logreg":
            from sklearn.linear_model import LogisticRegression

            clf, x, x_test = LogisticRegression(max_iter=1000), d.x, d.x_test
            x, x_test = (a.reshape(len(a), -1).astype(np.float32) / 255 for a in (x, x_test))
        else:
            clf, x, x_test = s.classifier(**args), d.x, d.x_test
        cl = CleanLearning(clf, seed=s.seed, cv_n_folds=s.folds, verbose=False)
        cl.fit(x, d.y)
        pred = cl.predict(x_test)
        dropped = cl.get_label_issues()["is_label_issue"].to_numpy()
        wrong = d.y != d.y_true
        extra = {
            "dropped": int(dropped.sum()),
            "dropped_wrong_fraction": float(wrong[dropped].mean()) if dropped.any() else None,
        }
    elif name.startswith("noisytail classifier"):
        pred = s.classifier(**args).fit(d.x, d.y).predict(d.x_test)
    elif name == "noisytail train":
        from noisytail.train import fit

        cfg = train_config(s, d)
        with tempfile.TemporaryDirectory() as out:
            summary = fit(cfg, Path(out) / "run", write_report=False)
        return {
            "contender": name,
            "config": {
                "method": {"name": cfg.method.name, **cfg.method.args},
                "model": {"name": cfg.model.name, **cfg.model.options},
                "epochs": cfg.train.epochs,
            },
            "accuracy": summary.test_accuracy,
            "balanced_accuracy": summary.balanced_accuracy,
            "seconds": time.perf_counter() - start,
        }
    else:
        raise ValueError(f"unknown contender {name!r}: one of {', '.join(CONTENDERS)}.")
    return {
        "contender": name,
        **_scores(pred, d.y_test),
        "seconds": time.perf_counter() - start,
        **extra,
    }


def run_bench(
    settings: list[Setting], contenders: list[str], out: Path, log: Any = None
) -> list[dict[str, Any]]:
    """Every contender on every setting; rows appended to ``out/results.jsonl``, and rows already
    there (same setting and contender) are kept, not rerun. Returns the rows of ``settings``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for s in settings:
        data = None
        for name in contenders:
            if any(r["setting"] == asdict(s) and r["contender"] == name for r in rows):
                continue
            data = data or load_data(s)
            row = {"setting": asdict(s), **run_one(name, s, data), "train_size": len(data.y)}
            rows.append(row)
            with open(path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            if log is not None:
                log(f"seed {s.seed} {name}: {row['accuracy']:.4f} in {row['seconds']:.0f}s")
    wanted = [asdict(s) for s in settings]
    return [r for r in rows if r["setting"] in wanted]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per contender, the number of seeds and the mean (± std over seeds) of the
    accuracies and the wall time."""
    lines = [
        "| contender | seeds | test accuracy | balanced accuracy | wall time (s) "
        "| dropped (wrong %) |",
        "|---|---|---|---|---|---|",
    ]

    def stat(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
        v = np.asarray(values, dtype=float) * scale
        spread = f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else ""
        return f"{v.mean():.{digits}f}{spread}"

    for name in CONTENDERS:
        mine = [r for r in rows if r["contender"] == name]
        if not mine:
            continue
        drop = ""
        if "dropped" in mine[0]:
            wrong = [r["dropped_wrong_fraction"] or 0.0 for r in mine]
            drop = f"{np.mean([r['dropped'] for r in mine]):.0f} ({100 * np.mean(wrong):.0f} %)"
        lines.append(
            f"| {name} | {len(mine)} | {stat([r['accuracy'] for r in mine])} | "
            f"{stat([r['balanced_accuracy'] for r in mine])} | "
            f"{stat([r['seconds'] for r in mine], 1.0, 0)} | {drop} |"
        )
    return "\n".join(lines)

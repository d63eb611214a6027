"""The detection benchmark (noisytail.benchmarks.detection, driven by scripts/bench_detection.py)
end to end in its quick mode on scikit-learn's digits: every detector, cleanlab included, gives F1
and AUROC in [0, 1]."""

import json
from dataclasses import replace

import pytest

from noisytail.benchmarks import detection as bench


@pytest.mark.slow
def test_quick_run_on_digits(tmp_path):
    pytest.importorskip("cleanlab")
    setting = replace(
        bench.Setting(),
        **{**bench.QUICK, "train_subset": 600, "epochs": 2},
        data="digits",
        noise=("symmetric",),
        device="cpu",
    )
    rows = bench.run_benchmark(setting, tmp_path, command="test", log=lambda _: None)
    assert [r["detector"] for r in rows] == bench.DETECTOR_ORDER
    for r in rows:
        assert 0.0 <= r["f1"] <= 1.0, r
        assert r["auroc"] is not None and 0.0 <= r["auroc"] <= 1.0, r
        assert r["seconds"] >= r["model_seconds"] > 0
        assert r["noise"] == "symmetric" and r["seed"] == 0
    # cleanlab and our confident learning rank by the same self-confidence of the same probs
    auroc = {r["detector"]: r["auroc"] for r in rows}
    assert auroc["cleanlab"] == pytest.approx(auroc["confident_learning"])
    lines = (tmp_path / "detection.jsonl").read_text().splitlines()
    assert len(lines) == len(rows)
    assert json.loads(lines[0])["command"] == "test"
    table = bench.summarise(rows)
    for name in bench.DETECTOR_ORDER:
        assert f"| {name} |" in table


def test_command_line_settings():
    s = bench.setting_from_options(
        quick=True, seeds=(3, 4), noise=("symmetric",), train_subset=0, epochs=None
    )
    assert s.seeds == (3, 4) and s.noise == ("symmetric",) and s.train_subset is None
    assert s.epochs == bench.QUICK["epochs"] and s.width == bench.QUICK["width"]
    s = bench.setting_from_options(model="mlp", extra=("model.options.hidden=[64]",))
    assert s.model == "mlp" and s.width is None and s.extra == ("model.options.hidden=[64]",)
    assert s.seeds == (0, 1, 2) and s.noise == ("symmetric", "asymmetric")
    assert s.train_subset == 10_000 and s.width is None
    assert bench.setting_from_options(model="mlp", width=8).width == 8  # a given width stays
    assert bench.make_config(s, "symmetric", 1).model.options == {"hidden": [64]}

"""The issue-5 benchmark (noisytail.benchmarks.ssl, driven by scripts/bench_ssl.py) in its quick
mode on digits: every part runs and produces the rows and tables it promises."""

import json

from noisytail.benchmarks import ssl as bench
from noisytail.benchmarks.ssl_options import SslOptions, pretrain_epochs
from noisytail.benchmarks.ssl_tables import _fmt


def test_quick_run_on_digits_produces_every_row(tmp_path):
    out = tmp_path / "bench"
    args = SslOptions(
        data="digits",
        ratio=10,
        seeds=(0,),
        out=str(out),
        noise_rates=(0.4,),  # one noise level keeps it short; the default has two
    ).shrunk()
    assert args.pretrain_epochs == 1 and args.finetune_epochs == 2  # --quick shrinks the budget
    assert SslOptions().noise_rates == (0.2, 0.4)
    rows = bench.run_bench(args)

    pre = {r["method"]: r for r in rows if r["part"] == "pretrain"}
    assert set(pre) == {"random", "simclr", "multiview", "mttv"}
    # equal views-with-gradient budget: k-view (k = 4) gets half of SimCLR's epochs, at least 1
    assert (
        pre["simclr"]["grad_views_per_image"] == 2 and pre["multiview"]["grad_views_per_image"] == 4
    )
    assert pretrain_epochs(SslOptions(pretrain_epochs=6), "multiview") == 3
    for r in pre.values():
        for key in ("probe_accuracy", "probe_few_third", "probe_many_third", "knn_accuracy"):
            assert 0.0 <= r[key] <= 1.0, (r["method"], key)
        assert r["probe_labelled"] == 10 * args.probe_per_class  # balanced labelled split
    assert (out / "pretrain" / "simclr-seed0" / "backbone.pt").exists()

    fine = [r for r in rows if r["part"] == "finetune"]
    got = {(r["noise_rate"], r["init"], r["loss"]) for r in fine}
    want = {
        (rate, init, loss)
        for rate in (0.4,)
        for init, losses in (("simclr", args.losses), ("scratch", args.scratch_losses))
        for loss in losses
    }
    assert got == want
    assert all(abs(r["realised_noise_rate"] - r["noise_rate"]) < 0.1 for r in fine)
    # a finished fine-tuning run is not redone: its row comes back from its summary.json
    r = fine[0]
    assert (
        bench.finetune_one(args, r["seed"], r["noise_rate"], r["loss"], r["init"] != "scratch") == r
    )

    cost = {r["method"]: r for r in rows if r["part"] == "cost"}
    assert set(cost) == {"simclr", "multiview", "mttv"}
    assert all(0.0 < r["augment_share"] < 1.0 and r["images_per_second"] > 0 for r in cost.values())
    # MTTV's loader makes (augmented, plain); its partners' views are made inside the step
    assert cost["multiview"]["views_built"] == 4 and cost["mttv"]["views_built"] == 2
    assert pre["mttv"]["method_args"]["partner"] == "dataset"
    assert pre["mttv"]["method_args"]["loss_form"] == "clean"

    text = (out / "tables.md").read_text()
    for heading in ("(a) Linear probe", "(b) Two-stage fine-tuning", "(c) Pre-training cost"):
        assert heading in text
    assert "| mttv |" in text and "| sym. 40 % | scratch | ce |" in text and "best by mean" in text
    saved = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(saved) == len(rows)


def test_tables_show_mean_and_sample_std():
    assert _fmt([0.5, 0.7]) == "60.00 ± 14.14"  # sample (n-1) std, in percent
    assert _fmt([0.5]) == "50.00" and _fmt([None]) == "n/a"


def test_an_interrupted_run_resumes_from_its_checkpoint_else_restarts(tmp_path):
    from noisytail.benchmarks.ssl_options import clear_unfinished
    from noisytail.runfolder import checkpoint_path
    from noisytail.summary import SUMMARY_FILE

    with_ckpt, without, done = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for run in (with_ckpt, without, done):
        checkpoint_path(run).parent.mkdir(parents=True)
        (run / "config.yaml").write_text("seed: 0\n")
    checkpoint_path(with_ckpt).write_bytes(b"x")
    (done / SUMMARY_FILE).write_text("{}")
    assert clear_unfinished(with_ckpt) is True and with_ckpt.exists()  # fit(resume=True)
    assert clear_unfinished(without) is False and not without.exists()  # redone from scratch
    assert clear_unfinished(done) is False and done.exists()  # finished: left alone
    assert clear_unfinished(tmp_path / "never") is False


def test_the_pool_starts_the_most_work_left_first_and_returns_rows_in_call_order(tmp_path):
    from noisytail.runfolder import METRICS_FILE

    args = SslOptions(out=str(tmp_path), pretrain_epochs=150, jobs=1)
    half = bench.pretrain_dir(args, "simclr", 1)  # resumed at epoch 75 of 150
    half.mkdir(parents=True)
    (half / METRICS_FILE).write_text("".join(f'{{"epoch": {e}}}\n' for e in range(1, 76)))
    probed = bench.pretrain_dir(args, "mttv", 1)
    probed.mkdir(parents=True)
    (probed / bench.ROW_FILE).write_text("{}")
    calls = [(args, m, s) for s in (0, 1) for m in ("simclr", "mttv")]
    work = [bench.pretrain_work(*c) for c in calls]
    assert work == [150.0, 150 * 1.3, 75.0, 0.0]  # SimCLR epochs left, MTTV's cost 1.3 each
    assert bench.longest_first(work) == [1, 0, 2, 3]
    assert bench.longest_first([2.0, 5.0, 2.0]) == [1, 0, 2]  # ties keep the call order
    started = []

    def run(a, method, seed):
        started.append((method, seed))
        return {"method": method, "seed": seed}

    rows = bench._map(args, run, calls, work)
    assert started == [("mttv", 0), ("simclr", 0), ("simclr", 1), ("mttv", 1)]
    assert [(r["method"], r["seed"]) for r in rows] == [(c[1], c[2]) for c in calls]

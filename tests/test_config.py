import pytest

from noisytail.config import (
    ConfigError,
    dump_config,
    load_config,
    load_run_config,
    load_yaml,
    to_dict,
)
from noisytail.data.specs import ImbalanceSpec, MetaSpec, NoiseSpec


def test_defaults_then_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.2\n  epochs: 3\nmethod:\n  name: erm\n  loss: gce\n")
    cfg = load_config(path, ["train.lr=0.3", "noise.kind=symmetric", "noise.rate=0.4"])
    assert cfg.train.lr == 0.3 and cfg.train.epochs == 3
    assert cfg.train.batch_size == 128  # default kept
    assert cfg.method.name == "erm" and cfg.method.args == {"loss": "gce"}
    assert cfg.noise.rate == 0.4


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match=r"'train.ecpochs'.*Did you mean 'epochs'"):
        load_config(None, ["train.ecpochs=3"])
    with pytest.raises(ConfigError, match=r"Unknown config key 'nosie'.*Did you mean 'noise'"):
        load_config(None, ["nosie.rate=0.2"])


def test_bad_values_are_errors():
    with pytest.raises(ConfigError, match=r"noise.rate must be in \[0, 1\)"):
        load_config(None, ["noise.rate=1.0"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(None, ["train.epochs=abc"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(None, ["train.schedule=cosin"])
    with pytest.raises(ConfigError, match="Did you mean 'val_balanced_accuracy'"):
        load_config(None, ["train.select_metric=val_balanced_acc"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_int_is_accepted_for_float():
    cfg = load_config(None, ["train.lr=1"])
    assert isinstance(cfg.train.lr, float)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/config.yaml")


def test_free_form_sections_and_round_trip(tmp_path):
    cfg = load_config(None, ["model.options.width=16", "method.loss={name: gce, q: 0.5}"])
    assert cfg.model.options == {"width": 16}
    assert cfg.method.args["loss"] == {"name": "gce", "q": 0.5}
    dump_config(cfg, tmp_path / "config.yaml", extra={"git_commit": "abc"})
    assert to_dict(load_run_config(tmp_path / "config.yaml")) == to_dict(cfg)


def test_naming_another_method_drops_the_previous_arguments(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method:\n  name: erm\n  loss: gce\n")
    cfg = load_config(path, ["method.name=l2b", "method.warmup_epochs=3"])
    assert cfg.method.name == "l2b" and cfg.method.args == {"warmup_epochs": 3}
    cfg = load_config(path, ["method.name=erm"])
    assert cfg.method.args == {"loss": "gce"}
    # an argument the overrides gave survives a later rename, whatever the order (a bench's
    # shared `set` comes before its method axis); the file's arguments do not
    for order in (
        ["method.warmup_epochs=3", "method.name=l2b"],
        ["method.name=l2b", "method.warmup_epochs=3"],
    ):
        assert load_config(path, order).method.args == {"warmup_epochs": 3}, order


def test_nested_overrides_merge_into_mappings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "method:\n  name: erm\n  loss: {name: gce, q: 0.7}\ndata:\n  options: {a: {b: 1, c: 2}}\n"
    )
    cfg = load_config(path, ["method.loss.q=0.5", "data.options.a.b=5"])
    assert cfg.method.args["loss"] == {"name": "gce", "q": 0.5}
    assert cfg.data.options == {"a": {"b": 5, "c": 2}}
    # a mapping naming another loss replaces the old one: its arguments belonged to gce
    cfg = load_config(path, ["method.loss={name: sce, alpha: 0.1}"])
    assert cfg.method.args["loss"] == {"name": "sce", "alpha": 0.1}


def test_freeze_schedule_options_are_checked():
    cfg = load_config(None, ["train.freeze_backbone_epochs=2", "train.backbone_lr_scale=0.1"])
    assert cfg.train.freeze_backbone_epochs == 2 and cfg.train.backbone_lr_scale == 0.1
    assert load_config(None).train.freeze_backbone_epochs == 0  # off by default
    with pytest.raises(ConfigError, match=r"freeze_backbone_epochs must be >= 0.*got -1"):
        load_config(None, ["train.freeze_backbone_epochs=-1"])
    with pytest.raises(ConfigError, match=r"backbone_lr_scale must be >= 0.*got -0.5"):
        load_config(None, ["train.backbone_lr_scale=-0.5"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(None, ["train.freeze_backbone_epochs=1.5"])


def test_every_float_notation_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\n  momentum: .9\n  gamma: 1.e-1\n")
    cfg = load_config(path, ["train.grad_clip=2.5e+1", "noise.kind=pair", "noise.rate=4e-1"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.momentum) == (1e-3, 5e-4, 0.9)
    assert (cfg.train.gamma, cfg.train.grad_clip, cfg.noise.rate) == (0.1, 25.0, 0.4)
    assert load_config(None, ["method.tau=1e-2"]).method.args["tau"] == 0.01  # free-form too
    assert load_config(None, ["data.options.train_csv=1e3.csv"]).data.options["train_csv"] == (
        "1e3.csv"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=.nan", "train.lr must be a finite number"),
        ("train.lr=.inf", "train.lr must be a finite number"),
        ("train.weight_decay=-.inf", "must be a finite number"),
        ("train.device=tpu", "train.device='tpu' is not one of auto, cpu, cuda"),
        ("train.device=cuda:x", "train.device"),
        ("train.num_threads=-2", "train.num_threads must be >= 1"),
        ("train.num_threads=0", "train.num_threads must be >= 1"),
        ("train.checkpoint_every=0", "train.checkpoint_every .* must be >= 1"),
        ("train.eval_batch_size=0", "train.eval_batch_size must be >= 1"),
        ("train.weight_decay=-1e-4", "train.weight_decay must be >= 0"),
        ("train.lr=[0.1", "not valid YAML"),
        ("seed=-1", "seed must be >= 0"),
        ("corruption_seed=-3", "corruption_seed must be >= 0"),
        ("train.milestones=[10, x]", "train.milestones must be epochs"),
        ("train.milestones=[0]", "train.milestones must be epochs"),
    ],
)
def test_bad_train_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_nesterov_needs_momentum():
    with pytest.raises(ConfigError, match="train.nesterov needs train.momentum > 0"):
        load_config(None, ["train.nesterov=true", "train.momentum=0"])
    assert load_config(None, ["train.nesterov=true"]).train.nesterov


def test_repeated_keys_and_empty_files_are_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"c.yaml line 4: key 'lr' is given twice"):
        load_config(path)
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match="key 'seed' is given twice"):
        load_config(path)
    for text in ("", "# only a comment\n", "\n\n"):
        path.write_text(text)
        with pytest.raises(ConfigError, match="is empty"):
            load_config(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(path)
    path.write_text("train: {lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(.* at line 2") as err:
        load_config(path)
    assert "\n" not in str(err.value)


def test_data_spec_sections_are_the_specs_built_once_from_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("noise:\n  kind: symmetric\n  rate: 0.4\nmeta:\n  per_class: 5\n")
    # Each override alone would leave an inconsistent spec; the spec is checked as a whole.
    cfg = load_config(
        path, ["noise.kind=none", "noise.rate=0", "meta.total=50", "meta.per_class=0"]
    )
    assert cfg.noise == NoiseSpec() and cfg.meta == MetaSpec(total=50)
    matrix = [[0.8, 0.2], [0.3, 0.7]]
    cfg = load_config(None, ["noise.kind=matrix", f"noise.matrix={matrix}"])
    assert isinstance(cfg.imbalance, ImbalanceSpec) and cfg.noise.matrix == ((0.8, 0.2), (0.3, 0.7))
    assert to_dict(cfg)["noise"]["matrix"] == matrix  # plain lists, as YAML reads them back
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_run_config(tmp_path / "config.yaml").noise == cfg.noise
    for overrides, message in [
        (["noise.kind=matrix"], "pass matrix"),
        (["noise.rate=0.3"], "noise kind 'none' takes no rate"),
        (["meta.source=pseudo"], "meta.source=pseudo .* set exactly one"),
        (
            ["meta.source=pseudo", "meta.total=50", "meta.balanced=false"],
            "meta.balanced=false applies to meta.source=train",
        ),
        (["imbalance.select_by=noisy"], "noise.order=noise_first"),
        (["imbalance.class_order=3"], "imbalance.class_order must be a list"),
        (["noise.kind=label_file"], "data.label_file"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            load_config(None, overrides)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        '!!python/object/apply:os.system ["echo unsafe"]',
        "model: !!python/name:os.system",
        "x: !!python/object/new:builtins.list [[1]]",
    ],
)
def test_yaml_with_python_tags_is_refused_as_data_never_run(text):
    """Config files are untrusted: `load_yaml` builds plain data only (a SafeLoader); a tag that
    would import or call Python is a one-line `ConfigError`."""
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(text, "untrusted.yaml")

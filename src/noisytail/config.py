"""Typed run configuration: defaults in dataclasses, then a YAML file, then ``--set`` overrides.

Unknown keys are errors with a suggestion. Free-form sections (``data.options``,
``model.options``, the method's arguments) are checked later against the signature of the data
source, model or method they configure, by the registries. The ``noise``, ``imbalance`` and
``meta`` sections are the data specs themselves (`NoiseSpec`, `ImbalanceSpec`, `MetaSpec` of
`noisytail.data.corruption`): their fields, defaults and checks live there, once.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .atomic import write_text
from .data.specs import AUGMENT_KINDS, ImbalanceSpec, MetaSpec, NoiseSpec, check_specs
from .errors import ConfigError, short_error  # ConfigError: config is its historical home
from .registry import suggest

__all__ = ["Config", "ConfigError", "from_dict", "load_config", "to_dict", "validate"]

# YAML 1.1 (PyYAML) reads ``1e-3`` as a string: its floats need a dot. Every config, grid and
# override is read with this loader, whose float rule is YAML 1.2's (``1e-3``, ``1E5``, ``.5``,
# ``-2.5e+3``, ``.inf``, ``.nan``) and which refuses a key repeated in one mapping.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key, line)
        self.key, self.line = key, line


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` (no Python objects) with YAML 1.2 floats and no repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # unhashable key: let PyYAML report it
                continue
            if repeated:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))


def load_yaml(text: str, where: str) -> Any:
    """Parse YAML ``text`` safely (`_Loader`); errors are one-line `ConfigError` naming
    ``where`` (a file name or ``override 'k=v'``) and the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)
    except _DuplicateKey as err:
        raise ConfigError(
            f"{where} line {err.line}: key {err.key!r} is given twice; keep one."
        ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        raise ConfigError(f"{where}: not valid YAML ({problem}{at}).") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({short_error(err)}).") from None


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # source-specific keyword arguments
    train_subset: int | None = None  # stratified random subset of the training split, first
    test_subset: int | None = None  # stratified random subset of the test split
    label_file: str | None = None  # real noisy training labels (.npy/.pt/.csv), e.g. CIFAR-10N
    label_file_key: str | None = None  # key inside a .pt dict, e.g. "worse_label"
    val_fraction: float = 0.1  # noisy validation split held out of the training pool
    augment: str = "crop_flip"  # none | flip | crop | crop_flip | simclr | simclr_noblur


@dataclass
class ModelConfig:
    name: str = "small_cnn"
    options: dict[str, Any] = field(default_factory=dict)
    init: str | None = None  # checkpoint or encoder file to start from


@dataclass
class MethodConfig:
    name: str = "erm"
    args: dict[str, Any] = field(default_factory=dict)  # written flat beside `name` in YAML


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 512
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | constant
    milestones: list[int] = field(default_factory=list)  # epochs, for "step"
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    # Two-stage fine-tuning: the first N epochs train only the head (backbone frozen, its
    # BatchNorm in eval mode); afterwards everything trains, the backbone at lr * backbone_lr_scale.
    freeze_backbone_epochs: int = 0
    backbone_lr_scale: float = 1.0
    sampler: str = "random"  # random | class_balanced
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on GPU and bf16-capable CPUs, else fp32) | fp32 | bf16
    channels_last: bool | None = None  # default: on for images (CPU and GPU)
    compile: bool = False
    data_on_device: bool = True
    num_threads: int | None = None
    checkpoint_every: int = 1
    progress: bool = True
    # Which noisy-validation metric picks the best epoch (checkpoints/best.pt): "val_accuracy" or
    # "val_balanced_accuracy" (mean recall over classes; better on long-tailed data, BENCHMARKS.md).
    select_metric: str = "val_accuracy"


@dataclass
class Config:
    seed: int = 0
    corruption_seed: int | None = None  # default: seed
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    imbalance: ImbalanceSpec = field(default_factory=ImbalanceSpec)
    meta: MetaSpec = field(default_factory=MetaSpec)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Settings chosen from the data where the config left them unset (noisytail.defaults):
    # dotted key -> "value (why)"; informational, recorded in the run's config.yaml.
    inferred: dict[str, str] = field(default_factory=dict)

    @property
    def effective_corruption_seed(self) -> int:
        return self.seed if self.corruption_seed is None else self.corruption_seed


_FREE_FORM = {("data", "options"), ("model", "options")}
_SPECS = ("noise", "imbalance", "meta")  # sections that are the (frozen) data specs


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _plain(value: Any) -> Any:
    """``value`` with every tuple a list (the specs keep matrices as tuples), for YAML and JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict, with the method's arguments flat beside its name."""
    out = _plain(dataclasses.asdict(cfg))
    method = out.pop("method")
    out["method"] = {"name": method["name"], **method["args"]}
    return out


# Settings that change how a run executes, not what it computes: a bench leaves them out of a run
# folder's hash, and --resume accepts a run saved with other values of them.
EXECUTION_ONLY = frozenset(
    {("train", "progress"), ("train", "num_threads"), ("train", "checkpoint_every")}
)


def without_execution_settings(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a `to_dict` result) without the `EXECUTION_ONLY` keys; a new dict."""
    out = dict(values)
    for section, key in EXECUTION_ONLY:
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k != key}
    return out


def _check_type(path: str, value: Any, annotation: Any) -> Any:
    """Coerce simple scalar types (int->float) and reject obvious mismatches."""
    ann = str(annotation)
    if value is None:
        if "None" in ann:
            return None
        raise ConfigError(f"{path} cannot be empty.")
    if ann.startswith("float") or ann.startswith("float |"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}.")
        if not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number, got {value!r}.")
        return float(value)
    if ann.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}.")
        return value
    if ann.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}.")
        return value
    if ann.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}.")
        return value
    if ann.startswith("dict") and not isinstance(value, dict):
        raise ConfigError(f"{path} must be a mapping, got {value!r}.")
    if ann.startswith("list") and not isinstance(value, list):
        raise ConfigError(f"{path} must be a list, got {value!r}.")
    if ann.startswith("tuple") and not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list, got {value!r}.")
    return value


def _unknown_key(path: str, key: str, names: list[str], prefix: str) -> ConfigError:
    return ConfigError(
        f"Unknown config key {path!r}.{suggest(key, names)} "
        f"Keys under {prefix.rstrip('.') or 'the top level'}: {', '.join(names)}."
    )


def _merged_spec(spec: Any, values: dict[str, Any], prefix: str) -> Any:
    """A new data spec: ``spec`` with ``values`` (type-checked); the spec checks the result and
    raises a one-line `ConfigError` (`noisytail.data.noise.CorruptionError`) if it is bad."""
    fields = _fields(type(spec))
    changes = {}
    for key, value in values.items():
        if key not in fields:
            raise _unknown_key(f"{prefix}{key}", key, sorted(fields), prefix)
        changes[key] = _check_type(f"{prefix}{key}", value, fields[key].type)
    return dataclasses.replace(spec, **changes)


def _merged_value(old: Any, new: Any) -> Any:
    """``new`` laid over ``old``: mappings merge key by key (``--set data.options.a.b=5`` keeps
    ``a.c``), except that a mapping naming another ``name`` (a loss spec, say) replaces the old
    one whole, as its arguments belong to the old name."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    if new.get("name", old.get("name")) != old.get("name"):
        return new
    return {**old, **{k: _merged_value(old.get(k), v) for k, v in new.items()}}


def _merge_section(obj: Any, values: dict[str, Any], prefix: str) -> None:
    fields = _fields(type(obj))
    if prefix == "method." and "name" in values:
        # The arguments belong to a method: naming another method drops the previous one's.
        if values["name"] != obj.name:
            obj.args = {}
        values = {"name": values["name"], **{k: v for k, v in values.items() if k != "name"}}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if prefix == "method." and key != "name":
            obj.args[key] = _merged_value(obj.args.get(key), value)
            continue
        if key not in fields:
            names = sorted(fields) if prefix != "method." else ["name", "<method argument>"]
            raise _unknown_key(path, key, names, prefix)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a mapping of keys, got {value!r}.")
            if not prefix and key in _SPECS:
                setattr(obj, key, _merged_spec(current, value, f"{path}."))
            else:
                _merge_section(current, value, f"{path}.")
        elif (prefix.rstrip("."), key) in _FREE_FORM and isinstance(value, dict):
            setattr(obj, key, _merged_value(current, value))
        else:
            coerced = _check_type(path, value, fields[key].type)
            setattr(obj, key, coerced)


def from_dict(values: dict[str, Any], base: Config | None = None) -> Config:
    """A `Config` from defaults (or ``base``) updated by ``values``; unknown keys raise."""
    cfg = Config() if base is None else from_dict(to_dict(base))  # a deep copy of base
    if not isinstance(values, dict):
        raise ConfigError("A config file must hold a mapping of keys (YAML 'key: value' lines).")
    _merge_section(cfg, values, "")
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.1"`` -> (["train", "lr"], 0.1); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like key=value, e.g. train.lr=0.1.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Override {text!r} has no key.")
    value = load_yaml(raw, f"Override {text!r}") if raw.strip() else None
    return key.split("."), value


def nest(path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return out


def read_yaml_file(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The mapping in a user's YAML file (a ``what``: "config", "grid"), read with `load_yaml`.

    A missing, unreadable, empty or comment-only file, or one that is not a mapping, is a
    `ConfigError`: an empty file is more likely a mistake than a wish for the defaults.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what.capitalize()} file {str(path)!r} not found.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"Cannot read {what} file {path}: {err}.") from None
    values = load_yaml(text, str(path))
    if values is None:
        raise ConfigError(
            f"{what.capitalize()} file {path} is empty (or only comments): give it some "
            f"'key: value' lines{', or omit it to use the defaults' if what == 'config' else ''}."
        )
    if not isinstance(values, dict):
        raise ConfigError(
            f"{what.capitalize()} file {path} must hold a mapping of keys ('key: value' lines), "
            f"not a {type(values).__name__}."
        )
    return values


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Defaults <- YAML file (``path``) <- ``overrides`` (``key=value`` strings).

    The file and the overrides are applied in order, except that the data-spec sections
    (``noise``, ``imbalance``, ``meta``) are gathered over all of them and each built once at the
    end: a spec is checked as a whole, so ``noise.kind=matrix`` may come before its
    ``noise.matrix=...``, and ``noise.kind=none`` before ``noise.rate=0``. Naming another method
    drops the file's method arguments but not those the overrides gave (a bench's shared
    ``method.<arg>=...`` reaches every method of its axis, whatever the order)."""
    layers = [] if path is None else [read_yaml_file(Path(path), "config")]
    for text in overrides:
        keys, value = parse_override(text)
        layers.append(nest(keys, value))
    cfg, specs, given = Config(), {}, {}
    for n, layer in enumerate(layers):
        held = {k: v for k, v in layer.items() if k in _SPECS and isinstance(v, dict)}
        cfg = from_dict({k: v for k, v in layer.items() if k not in held}, cfg)
        method = layer.get("method") if n >= len(layers) - len(overrides) else None
        if isinstance(method, dict):  # an override of the method section
            given.update({k: cfg.method.args[k] for k in method if k != "name"})
            for k, v in given.items():
                cfg.method.args[k] = copy.deepcopy(v)
        for name, values in held.items():
            specs.setdefault(name, {}).update(values)
    cfg = from_dict(specs, cfg)
    validate(cfg)
    return cfg


_DEVICE = re.compile(r"auto|cpu|cuda|cuda:\d+|mps")


def validate(cfg: Config) -> None:
    """Value checks that do not need the data set (each data spec has checked itself)."""
    check_specs(cfg.noise, cfg.imbalance, cfg.meta)
    if cfg.data.label_file and cfg.noise.kind not in ("none", "label_file"):
        raise ConfigError(
            "data.label_file gives real noisy labels: set noise.kind=none (no synthetic noise)."
        )
    if cfg.noise.kind == "label_file" and not cfg.data.label_file:
        raise ConfigError("noise.kind=label_file reads its labels from data.label_file: set it.")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}.")
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1:
        raise ConfigError("train.epochs and train.batch_size must be at least 1.")
    if cfg.train.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {cfg.train.lr}.")
    if cfg.train.eval_batch_size < 1:
        raise ConfigError(f"train.eval_batch_size must be >= 1, got {cfg.train.eval_batch_size}.")
    for key in ("weight_decay", "grad_clip", "warmup_epochs", "momentum"):
        if getattr(cfg.train, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {getattr(cfg.train, key)}.")
    for key in ("seed", "corruption_seed"):
        value = getattr(cfg, key)
        if value is not None and value < 0:
            raise ConfigError(f"{key} must be >= 0 (a NumPy seed), got {value}.")
    if cfg.train.nesterov and cfg.train.optimizer == "sgd" and cfg.train.momentum == 0:
        raise ConfigError("train.nesterov needs train.momentum > 0 (Nesterov momentum).")
    bad = [m for m in cfg.train.milestones if isinstance(m, bool) or not isinstance(m, int)]
    if bad or any(m < 1 for m in cfg.train.milestones):
        raise ConfigError(
            f"train.milestones must be epochs (integers >= 1), got {list(cfg.train.milestones)}."
        )
    if cfg.train.gamma <= 0:
        raise ConfigError(
            f"train.gamma (the step schedule's factor) must be > 0, got {cfg.train.gamma}."
        )
    if cfg.train.checkpoint_every < 1:
        raise ConfigError(
            "train.checkpoint_every is a number of epochs and must be >= 1, got "
            f"{cfg.train.checkpoint_every}."
        )
    if cfg.train.num_threads is not None and cfg.train.num_threads < 1:
        raise ConfigError(
            "train.num_threads must be >= 1 (or left empty for PyTorch's default), got "
            f"{cfg.train.num_threads}."
        )
    if not _DEVICE.fullmatch(cfg.train.device):
        raise ConfigError(
            f"train.device={cfg.train.device!r} is not one of auto, cpu, cuda, cuda:<N>, mps."
            + suggest(cfg.train.device, ["auto", "cpu", "cuda", "mps"])
        )
    if cfg.train.freeze_backbone_epochs < 0:
        raise ConfigError(
            "train.freeze_backbone_epochs must be >= 0 (0 = never frozen), got "
            f"{cfg.train.freeze_backbone_epochs}."
        )
    if cfg.train.backbone_lr_scale < 0:
        raise ConfigError(
            "train.backbone_lr_scale must be >= 0 (1 = the same lr as the head), got "
            f"{cfg.train.backbone_lr_scale}."
        )
    choices = {
        "train.optimizer": (cfg.train.optimizer, ("sgd", "adamw")),
        "train.schedule": (cfg.train.schedule, ("cosine", "step", "constant")),
        "train.sampler": (cfg.train.sampler, ("random", "class_balanced")),
        "train.precision": (cfg.train.precision, ("auto", "fp32", "bf16")),
        "data.augment": (cfg.data.augment, AUGMENT_KINDS),
        "train.select_metric": (
            cfg.train.select_metric,
            ("val_accuracy", "val_balanced_accuracy"),
        ),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(
                f"{key}={value!r} is not one of {', '.join(allowed)}."
                + suggest(value, list(allowed))
            )


def dump_config(cfg: Config, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write the resolved config (plus e.g. git commit and versions under ``_provenance``),
    atomically (`noisytail.atomic.write_text`)."""
    values = to_dict(cfg)
    if extra:
        values["_provenance"] = extra
    write_text(yaml.safe_dump(values, sort_keys=False), path)


def load_run_config(path: str | os.PathLike) -> Config:
    """Read a run folder's ``config.yaml`` back (ignoring its provenance block)."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    values.pop("_provenance", None)
    return from_dict(values)

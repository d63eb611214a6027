import pytest

from noisytail.registry import Registry, RegistryError


def make():
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha(*, size: int = 1, colour: str = "red"):
        return (size, colour)

    return reg


def test_duplicate_name_raises():
    reg = make()
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("alpha")(lambda: None)


def test_unknown_name_suggests_and_lists():
    reg = make()
    with pytest.raises(RegistryError, match=r"Did you mean 'alpha'.*Valid widgets: alpha"):
        reg.get("alpah")


def test_suggestions_take_abbreviations_and_case():
    from noisytail.registry import suggest

    assert suggest("exp", ["step", "exponential"]).startswith(" Did you mean 'exponential'")
    assert suggest("kNN", ["knn", "auto"]) == " Did you mean 'knn'?"
    assert suggest("zzz", ["knn", "auto"]) == ""


def test_build_checks_keywords_with_suggestion():
    reg = make()
    assert reg.build("alpha", {"size": 3}) == (3, "red")
    with pytest.raises(RegistryError, match=r"no argument 'colur'.*Did you mean 'colour'"):
        reg.build("alpha", {"colur": "blue"})


def test_fixed_arguments_cannot_come_from_config():
    reg = make()
    with pytest.raises(RegistryError, match="set by noisytail"):
        reg.build("alpha", {"size": 2}, size=1)


def test_build_checks_scalar_argument_types():
    reg = Registry("widget")

    @reg.register("beta")
    def beta(*, k: int | None = None, rate: float = 0.5, name: str | float = "x", on: bool = True):
        return (k, rate, name, on)

    assert reg.build("beta", {"k": 3, "rate": 1, "name": 0.2, "on": False}) == (3, 1, 0.2, False)
    assert reg.build("beta", {"k": None})[0] is None
    for args, message in [
        ({"k": "abc"}, "'k' must be an integer or empty, got 'abc'"),
        ({"k": True}, "'k' must be an integer"),
        ({"k": 2.5}, "'k' must be an integer"),
        ({"rate": "fast"}, "'rate' must be a finite number"),
        ({"rate": float("nan")}, "'rate' must be a finite number"),
        ({"name": [1]}, "'name' must be a string or a finite number"),
        ({"on": "yes"}, "'on' must be true or false"),
    ]:
        with pytest.raises(RegistryError, match=message):
            reg.build("beta", args)


def test_a_refused_argument_value_is_a_registry_error_and_a_value_error():
    from noisytail.registry import Registry, RegistryError

    reg = Registry("thing")

    @reg.register("picky")
    def picky(*, mode: str = "a"):
        if mode not in ("a", "b"):
            raise ValueError(f"mode must be 'a' or 'b', got {mode!r}")
        return mode

    with pytest.raises(RegistryError, match="thing 'picky': mode must be"):
        reg.build("picky", {"mode": "c"})
    with pytest.raises(ValueError, match="mode must be"):
        reg.build("picky", {"mode": "c"})
    assert reg.build("picky", {"mode": "b"}) == "b"


def test_signature_defaults_are_the_plain_defaults_a_config_leaves_unset():
    from noisytail.registry import signature_defaults

    def f(a, b=1, *, c=(0.5, "x"), d=None, e=print, g=[1, (2, 3)]):  # noqa: B006
        return a

    assert signature_defaults(f, {"b": 3}) == {"c": [0.5, "x"], "d": None, "g": [1, [2, 3]]}


def test_code_defaults_name_the_method_model_and_loss_defaults_left_to_the_code():
    from noisytail.build import code_defaults
    from noisytail.config import load_config

    got = code_defaults(load_config(None, ["method.name=erm", "method.loss=gce"]))
    assert got["loss"]["q"] == 0.7 and "loss" not in got["method"]
    assert got["model"]["width"] == 32
    got = code_defaults(load_config(None, ["method.name=l2b", "method.lookahead=all"]))
    assert "lookahead" not in got["method"] and got["method"]["meta_every"] == 1
    assert "loss" not in got
    # a loss given as a mapping: the defaults of the arguments it leaves out
    got = code_defaults(
        load_config(None, ["method.name=erm", "method.loss={name: sce, alpha: 0.2}"])
    )
    assert "alpha" not in got["loss"] and got["loss"]["beta"] == 1.0

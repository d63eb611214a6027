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


def test_build_checks_keywords_with_suggestion():
    reg = make()
    assert reg.build("alpha", {"size": 3}) == (3, "red")
    with pytest.raises(RegistryError, match=r"no argument 'colur'.*Did you mean 'colour'"):
        reg.build("alpha", {"colur": "blue"})


def test_fixed_arguments_cannot_come_from_config():
    reg = make()
    with pytest.raises(RegistryError, match="set by noisytail"):
        reg.build("alpha", {"size": 2}, size=1)

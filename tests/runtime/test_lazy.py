"""The packages' public names imported on first use (runtime/lazy.py)."""
import importlib
import types

import pytest

from contrastkit.runtime.lazy import lazy_getattr


def test_imports_on_first_read_and_keeps_the_value():
    namespace: dict = {}
    getattr_ = lazy_getattr("contrastkit.runtime", {"printable": ".text", "text": (".text", None)}, namespace)
    text = importlib.import_module("contrastkit.runtime.text")
    assert isinstance(getattr_("text"), types.ModuleType) and getattr_("text") is text
    assert getattr_("printable") is text.printable
    assert namespace == {"text": text, "printable": text.printable}  # later look-ups skip the function


def test_an_unknown_name_is_an_attribute_error_naming_the_package():
    getattr_ = lazy_getattr("contrastkit.runtime", {}, {})
    with pytest.raises(AttributeError, match="module 'contrastkit.runtime' has no attribute 'nothing'"):
        getattr_("nothing")


@pytest.mark.parametrize("package", ["contrastkit", "contrastkit.evaluate", "contrastkit.export", "contrastkit.runtime"])
def test_every_listed_name_resolves(package):
    module = importlib.import_module(package)
    for name in module._LAZY:
        assert getattr(module, name) is not None, (package, name)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        getattr(module, "no_such_name")

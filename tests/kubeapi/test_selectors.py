"""The selector parsers on their own: grammar edges the list tests do not reach."""

from __future__ import annotations

import pytest

from tests.kubeapi.selectors import FieldSelector, LabelSelector, SelectorError


@pytest.mark.parametrize("text, labels, expected", [
    ("", {}, True),
    ("a", {"a": ""}, True),
    ("a=", {"a": ""}, True),
    ("a=", {"a": "x"}, False),
    ("example.com/team=web", {"example.com/team": "web"}, True),
    ("a in ()", {"a": "x"}, False),
    ("a notin ()", {}, True),
    ("a in (x,y),b!=z", {"a": "y", "b": "q"}, True),
    ("  a  =  x  ", {"a": "x"}, True),
    ("!a,!b", {"c": "1"}, True),
    ("a>1", {"a": "x"}, False),
])
def test_label_selector_matches(text, labels, expected):
    assert LabelSelector(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["a=b=c", "a b", ",a", "a,,b", "a in x", "a in (x", "!", "a>x",
                                  "a=" + "x" * 64, "/a=b"])
def test_label_selector_syntax_errors(text):
    with pytest.raises(SelectorError):
        LabelSelector(text)


def test_field_selector_escapes_and_operators():
    sel = FieldSelector(r"metadata.name=a\,b,spec.x!=y")
    assert sel.terms == [("metadata.name", "=", "a,b"), ("spec.x", "!=", "y")]
    assert sel.matches({"metadata": {"name": "a,b"}, "spec": {}})
    assert not sel.matches({"metadata": {"name": "a,b"}, "spec": {"x": "y"}})
    assert FieldSelector("metadata.name=x").only_name() == "x"
    assert FieldSelector("spec.ready=false").matches({"spec": {"ready": False}})
    assert FieldSelector("spec.port=80").matches({"spec": {"port": 80}})
    assert FieldSelector("spec.gone=").matches({"spec": {}})


@pytest.mark.parametrize("text", ["novalue", "=x", r"a=\q"])
def test_field_selector_syntax_errors(text):
    with pytest.raises(SelectorError):
        FieldSelector(text)

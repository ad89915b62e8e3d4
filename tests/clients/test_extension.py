"""Plug-in points resolved from configuration."""

from __future__ import annotations

import pytest

from bisman_ops import extension


def test_unset_gives_the_default():
    assert extension.load("pgbouncer switch", "default", environ={}) == "default"


def test_a_configured_module_attribute_is_loaded():
    env = {"BISMAN_IMPL_PGBOUNCER_SWITCH": "bisman_ops.extension:load"}
    assert extension.load("pgbouncer switch", None, environ=env) is extension.load


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("no-colon", "is not 'package.module:attribute'"),
        ("no_such_module_xyz:thing", "cannot be imported"),
        ("bisman_ops.extension:missing", "has no attribute"),
    ],
)
def test_a_bad_spec_names_the_variable_and_the_problem(spec, problem):
    with pytest.raises(ValueError, match=problem) as err:
        extension.load("x", None, environ={"BISMAN_IMPL_X": spec})
    assert "BISMAN_IMPL_X" in str(err.value)

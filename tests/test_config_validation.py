"""One vocabulary, checked ranges and real ``--help`` for every recipe."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from tdmt.algos import RECIPES, get_recipe
from tdmt.config import RENAMED, BaseConfig, _range_of, apply_overrides, field_comments, usage

NUMERIC = (int, float)


def _numeric(annotation) -> bool:
    if annotation in NUMERIC:
        return True
    origin = typing.get_origin(annotation)
    return origin in (tuple, list) and all(a in (int, float, Ellipsis) for a in typing.get_args(annotation))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_extends_the_base_config_and_every_key_is_described_and_ranged(recipe):
    cls = get_recipe(recipe).Config
    assert issubclass(cls, BaseConfig)
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    assert not [n for n in fields if n not in comments], "keys without a description"
    assert not [n for n in fields if _numeric(hints[n]) and _range_of(cls, n) is None], "numeric keys without range"
    assert not [old for old in RENAMED if old in fields], "an old key name is still in use"
    text = usage(cls)
    for name in fields:
        assert f"  {name}=" in text
    cls().validate()  # the defaults are valid


@pytest.mark.parametrize("recipe, key, value", [
    ("td3_mt", "gamma", 2.5), ("td3_mt", "tau", 0.0), ("td3_mt", "policy_noise", -1.0), ("td3_mt", "hidden", []),
    ("td3_mt", "hidden", [0]), ("ktm_drl", "alpha", -1.0), ("sac_mt", "lr", 0.0), ("ctpg", "guide_step", 0),
    ("a2c_multitask", "t_max", 0), ("distill_kl", "p_student", 1.5), ("train_teachers", "eval_episodes", 0),
    ("finetune", "entropy_coeff", -0.1),
])
def test_out_of_range_values_are_refused_naming_the_value_and_the_range(recipe, key, value):
    with pytest.raises(ValueError, match=rf"^{key}=.* is out of range; valid: "):
        apply_overrides(get_recipe(recipe).Config(), {key: value})


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_old_key_names_are_refused_with_the_new_one(recipe):
    cls = get_recipe(recipe).Config
    fields = {f.name for f in dataclasses.fields(cls)}
    for old, new in RENAMED.items():
        if new in fields:
            with pytest.raises(KeyError, match=f"use {new}="):
                apply_overrides(cls(), {old: 1})

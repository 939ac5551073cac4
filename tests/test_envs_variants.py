"""Morphology variants differ from the base model exactly in the scaled geoms; gravity variants in gravity."""

import gymnasium as gym
import numpy as np
import pytest

import tdmt  # noqa: F401
from tdmt.envs.variants import BODY_PART_GEOMS, GRAVITY


def _model(env_id):
    return gym.make(env_id).unwrapped.model


BASE = None


def base_model():
    global BASE
    if BASE is None:
        BASE = _model("HalfCheetah-v5")
    return BASE


@pytest.mark.parametrize("scale,factor", [("Big", 1.25), ("Small", 0.75)])
@pytest.mark.parametrize("part", sorted(BODY_PART_GEOMS))
def test_morphology_scales_only_named_geoms(scale, factor, part):
    base, variant = base_model(), _model(f"tdmt/HalfCheetah{scale}{part}-v0")
    names = [base.geom(i).name for i in range(base.ngeom)]
    scaled = [names.index(n) for n in BODY_PART_GEOMS[part]]
    others = [i for i in range(base.ngeom) if i not in scaled]
    # Capsules hold (radius, half-length) in geom_size. The torso's size attribute gives only the radius (its
    # length comes from `fromto`, not edited); the other parts give both numbers, so both scale.
    edited = 1 if part == "Torso" else 2
    np.testing.assert_allclose(variant.geom_size[scaled, :edited], base.geom_size[scaled, :edited] * factor,
                               rtol=1e-6)
    np.testing.assert_array_equal(variant.geom_size[scaled, edited:], base.geom_size[scaled, edited:])
    np.testing.assert_array_equal(variant.geom_size[others], base.geom_size[others])
    np.testing.assert_array_equal(variant.geom_pos, base.geom_pos)
    np.testing.assert_array_equal(variant.opt.gravity, base.opt.gravity)
    # inertiafromgeom + settotalmass="14": total mass is preserved, its distribution changes.
    assert variant.body_mass.sum() == pytest.approx(14.0)
    assert not np.allclose(variant.body_mass, base.body_mass)


@pytest.mark.parametrize("level", sorted(GRAVITY))
def test_gravity_variants_change_only_gravity(level):
    base, variant = base_model(), _model(f"tdmt/HalfCheetahGravity{level}-v0")
    np.testing.assert_allclose(variant.opt.gravity, [0.0, 0.0, -GRAVITY[level]])
    np.testing.assert_array_equal(variant.geom_size, base.geom_size)
    np.testing.assert_array_equal(variant.body_mass, base.body_mass)


def test_gravity_values_are_ctpg_fractions_of_earth():
    assert [GRAVITY[k] / 9.81 for k in ("Half", "ThreeQuarters", "Normal", "OneAndQuarter", "OneAndHalf")] == \
        pytest.approx([0.5, 0.75, 1.0, 1.25, 1.5])

"""Task variants as MuJoCo XML edits, and their gymnasium registration (``tdmt/<TaskName>-v0``).

Morphology follows gym-extensions (KTM-DRL Benchmark A, Arora §4, CTPG MT8): in gymnasium's
``half_cheetah.xml`` every number of the ``size`` attribute of the named geoms is multiplied by 1.25 (Big) or
0.75 (Small); nothing else is edited, masses follow from ``inertiafromgeom`` with ``settotalmass="14"``.
Gravity variants (CTPG App. D.2) set ``<option gravity="0 0 -g">``.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import gymnasium as gym

HALFCHEETAH_XML = Path(gym.__file__).parent / "envs" / "mujoco" / "assets" / "half_cheetah.xml"

BODY_PART_GEOMS: dict[str, tuple[str, ...]] = {
    "Torso": ("torso",),
    "Thigh": ("bthigh", "fthigh"),
    "Leg": ("bshin", "fshin"),
    "Foot": ("bfoot", "ffoot"),
}
SIZE_SCALE: dict[str, float] = {"Big": 1.25, "Small": 0.75}
GRAVITY: dict[str, float] = {
    "Half": 4.905,
    "ThreeQuarters": 7.3575,
    "Normal": 9.81,
    "OneAndQuarter": 12.2625,
    "OneAndHalf": 14.715,
}
PENDULUM_GRAVITY: dict[str, float] = {"Low": 6.0, "Normal": 10.0, "High": 14.0}


def morphology_tree(scale_name: str, part: str) -> ET.ElementTree:
    """The half-cheetah model with the ``size`` of ``part``'s geoms scaled by ``SIZE_SCALE[scale_name]``."""
    if scale_name not in SIZE_SCALE:
        raise ValueError(f"unknown size scale {scale_name!r}; valid: {sorted(SIZE_SCALE)}")
    if part not in BODY_PART_GEOMS:
        raise ValueError(f"unknown body part {part!r}; valid: {sorted(BODY_PART_GEOMS)}")
    tree = ET.parse(HALFCHEETAH_XML)
    scale = SIZE_SCALE[scale_name]
    for geom in tree.iter("geom"):
        if geom.get("name") in BODY_PART_GEOMS[part]:
            sizes = [float(v) * scale for v in geom.get("size").split()]
            geom.set("size", " ".join(repr(v) for v in sizes))
    return tree


def gravity_tree(g: float) -> ET.ElementTree:
    """The half-cheetah model with gravity ``(0, 0, -g)``."""
    tree = ET.parse(HALFCHEETAH_XML)
    tree.find("option").set("gravity", f"0 0 {-g!r}")
    return tree


def write_xml(tree: ET.ElementTree, name: str) -> str:
    """Write ``tree`` to a per-user cache file (atomically: concurrent workers may race) and return its path."""
    folder = Path(os.environ.get("TDMT_XML_DIR", Path(tempfile.gettempdir()) / f"tdmt-xml-{os.getuid()}"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.xml"
    tmp = folder / f".{name}.{os.getpid()}.xml"
    tree.write(tmp)
    os.replace(tmp, path)
    return str(path)


def make_halfcheetah_variant(*, scale: str | None = None, part: str | None = None, gravity: str | None = None,
                             **kwargs) -> gym.Env:
    """Entry point of the ``tdmt/HalfCheetah*-v0`` ids: write the edited XML, load ``HalfCheetah-v5`` on it."""
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    if gravity is not None:
        tree, name = gravity_tree(GRAVITY[gravity]), f"HalfCheetahGravity{gravity}"
    else:
        tree, name = morphology_tree(scale, part), f"HalfCheetah{scale}{part}"
    return HalfCheetahEnv(xml_file=write_xml(tree, name), **kwargs)


def halfcheetah_variant_ids() -> dict[str, dict]:
    """Task name -> entry-point kwargs for every half-cheetah variant."""
    ids = {f"HalfCheetahGravity{g}": {"gravity": g} for g in GRAVITY}
    for scale in SIZE_SCALE:
        for part in BODY_PART_GEOMS:
            ids[f"HalfCheetah{scale}{part}"] = {"scale": scale, "part": part}
    return ids


def register_all() -> None:
    """Register every tdmt task as a gymnasium id ``tdmt/<TaskName>-v0`` (idempotent)."""
    for name, kwargs in halfcheetah_variant_ids().items():
        env_id = f"tdmt/{name}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="tdmt.envs.variants:make_halfcheetah_variant", kwargs=kwargs,
                         max_episode_steps=1000)
    for level, g in PENDULUM_GRAVITY.items():
        env_id = f"tdmt/PendulumGravity{level}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv",
                         kwargs={"g": g}, max_episode_steps=200)

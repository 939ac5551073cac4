"""Vanilla multi-task A2C (Arora et al.): ``python recipes/a2c_multitask.py suite=halfcheetah-arora6 seed=0``.

``architecture=independent`` trains K separate single-task networks (the paper's "Scratch" column);
``update=joint`` updates all heads at once instead of cycling tasks. Small budget:
``config=recipes/configs/arora_a2c_demo.yaml``. Keys and defaults: ``tdmt.algos.a2c_multitask.Config``.
"""

from tdmt.algos import recipe_main

if __name__ == "__main__":
    recipe_main("a2c_multitask")

"""K TD3 teachers ("Ideal") trained as one batched model: ``python recipes/train_teachers.py suite=halfcheetah-mt8``.

Saves ``<run_dir>/teachers/<task>/{teacher.pt, replay/, eval.json}`` (run_dir default
``runs/train_teachers/<suite>/<changed keys>seed<seed>-<config hash>``, where ``ktm_drl`` finds it).
Keys and defaults: ``tdmt.algos.teachers.Config``.
"""

from tdmt.algos import recipe_main

if __name__ == "__main__":
    recipe_main("train_teachers")

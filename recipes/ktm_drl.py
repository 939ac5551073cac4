"""KTM-DRL (Algorithm 1): ``python recipes/ktm_drl.py suite=halfcheetah-mt8 seed=0`` after train_teachers.

Ablations (Table 3): ``offline_steps=0``, ``online_steps=0``, ``alpha=0``, ``beta=0``, ``per_task_replay=false``.
Teachers default to the one finished ``train_teachers`` run of the same suite and seed under
``runs/train_teachers/<suite>/`` (``teachers_dir=`` to choose).
Keys and defaults: ``tdmt.algos.ktm_drl.Config``; ``config=recipes/configs/ktm_drl_demo.yaml`` loads a budget.
"""

from tdmt.algos import recipe_main

if __name__ == "__main__":
    recipe_main("ktm_drl")

"""TD3-MT baseline (per-task replay + mask): ``python recipes/td3_mt.py suite=halfcheetah-mt8 seed=0``.

``pcgrad=true`` runs G-Surgery (PCGrad on TD3). Keys and defaults: ``tdmt.algos.td3_mt.Config``.
"""

from tdmt.algos import recipe_main

if __name__ == "__main__":
    recipe_main("td3_mt")

"""Multi-task SAC (SAC-MT / CTPG "Base"): ``python recipes/sac_mt.py suite=halfcheetah-mt5 backbone=mhsac seed=0``.

Keys and defaults: ``tdmt.algos.sac_mt.Config``; ``config=FILE.yaml`` loads several at once.
"""

from tdmt.algos import recipe_main

if __name__ == "__main__":
    recipe_main("sac_mt")

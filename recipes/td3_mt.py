"""TD3-MT baseline (per-task replay + mask): ``python recipes/td3_mt.py suite=halfcheetah-mt8 seed=0``.

``pcgrad=true`` runs G-Surgery (PCGrad on TD3). Keys and defaults: ``tdmt.algos.td3_mt.Config``.
"""

import sys

from tdmt.algos.td3_mt import Config, run
from tdmt.config import parse_args

if __name__ == "__main__":
    run(parse_args(Config, sys.argv[1:]))

"""Multi-task SAC (SAC-MT / CTPG "Base"): ``python recipes/sac_mt.py suite=halfcheetah-mt5 backbone=mhsac seed=0``.

Keys and defaults: ``tdmt.algos.sac_mt.Config``; ``config=FILE.yaml`` loads several at once.
"""

import sys

from tdmt.algos.sac_mt import Config, run
from tdmt.config import parse_args

if __name__ == "__main__":
    run(parse_args(Config, sys.argv[1:]))

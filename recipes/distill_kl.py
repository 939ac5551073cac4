"""Recipe: `python recipes/distill_kl.py [config=FILE.yaml] [key=value ...]` (see tdmt/algos/distill_kl.py and docs/README_arora.md)."""

import sys

from tdmt.algos.distill_kl import Config, run
from tdmt.config import parse_args

if __name__ == "__main__":
    run(parse_args(Config, sys.argv[1:]))

"""Recipe: `python recipes/a2c_multitask.py [config=FILE.yaml] [key=value ...]` (see tdmt/algos/a2c_multitask.py and docs/README_arora.md)."""

import sys

from tdmt.algos.a2c_multitask import Config, run
from tdmt.config import parse_args

if __name__ == "__main__":
    run(parse_args(Config, sys.argv[1:]))

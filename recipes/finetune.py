"""Recipe: `python recipes/finetune.py [config=FILE.yaml] [key=value ...]` (see tdmt/algos/finetune.py and docs/README_arora.md)."""

import sys

from tdmt.algos.finetune import Config, run
from tdmt.config import parse_args

if __name__ == "__main__":
    run(parse_args(Config, sys.argv[1:]))

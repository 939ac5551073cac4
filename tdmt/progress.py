"""Progress bars for long loops: tqdm, refreshed at most every 30 s when written to a log file (SLURM, nohup, CI)
instead of many times a second, so logs stay readable."""

from __future__ import annotations

import sys

from tqdm import tqdm as _tqdm

LOG_FILE_INTERVAL_S = 30.0


class tqdm(_tqdm):  # noqa: N801 - a drop-in for tqdm.tqdm
    def __init__(self, *args, **kwargs):
        if not sys.stderr.isatty():
            kwargs.setdefault("mininterval", LOG_FILE_INTERVAL_S)
        super().__init__(*args, **kwargs)

"""The options every update benchmark shares (``--device``, ``--precision``, ``--compile``, ``--cudagraphs``,
``--json``), as ``benchmarks/gpu_check.py`` calls them, and their one-line validation."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tdmt.device import PRECISIONS, resolve_device


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how the timed updates run; eager float32 is always timed (the reference of the ratios)."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=list(PRECISIONS),
                        help="the learners' precision(s)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd updates to eager")
    parser.add_argument("--cudagraphs", action="store_true", help="add CUDA-graph updates to eager (CUDA only)")
    parser.add_argument("--json", type=Path, help="write {'rows': [...]} of the medians here")


def speed_variants(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[torch.device, list[str]]:
    """The device and the speed variants to time (``eager`` first), or one line and exit 2 for a bad device or
    ``--cudagraphs`` off CUDA."""
    try:
        device = resolve_device(args.device)
        if args.cudagraphs and device.type != "cuda":
            raise ValueError(f"--cudagraphs with --device={args.device!r} is not valid; valid: --device=cuda")
    except ValueError as e:
        parser.error(str(e))
    speeds = ["eager", *(["compile"] if args.compile else []), *(["cudagraphs"] if args.cudagraphs else []),
              *(["compile+cudagraphs"] if args.compile and args.cudagraphs else [])]
    return device, speeds

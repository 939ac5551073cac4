"""The ``tdmt`` command: sweeps, their status, and their aggregated report.

    tdmt sweep slurm/sweeps/example.yaml [key=value ...] [--dry-run] [--wait]
    tdmt sweep name=quick recipe=td3_mt suites=[pendulum-mt3] seeds=[0,1] executor=local
    tdmt status runs/<sweep>
    tdmt report runs/<sweep> [--out DIR] [--teachers runs/<teacher sweep>]

``key=value`` overrides the spec (dotted keys for nested ones: ``slurm.partition=gpu``,
``methods.ktm_drl.overrides.total_steps=1000``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from submitit.core.utils import FailedJobError, FailedSubmissionError

from tdmt import launch as launch_mod


def _split(args: Sequence[str]) -> tuple[str | None, list[str]]:
    files = [a for a in args if "=" not in a]
    if len(files) > 1:
        raise SystemExit(f"tdmt sweep: one spec file at most, got {files}")
    return (files[0] if files else None), [a for a in args if "=" in a]


def _sweep(ns: argparse.Namespace) -> int:
    path, overrides = _split(ns.args)
    try:
        spec = launch_mod.load_spec(path, overrides)
        submitted = launch_mod.launch(spec, dry_run=ns.dry_run)
    except (launch_mod.SweepSpecError, FileNotFoundError) as e:
        print(f"tdmt sweep: {e}", file=sys.stderr)
        return 2
    except (FailedJobError, FailedSubmissionError) as e:  # sbatch refused the array (e.g. unknown partition)
        print(f"tdmt sweep: the submission failed, nothing was submitted:\n{e}", file=sys.stderr)
        return 3
    if ns.dry_run:
        for element in submitted:
            print(f"  would submit {element.key} -> {element.run_dir}")
        return 0
    if ns.wait and spec.executor == "slurm":
        statuses = launch_mod.wait(spec.dir.resolve(), poll_s=ns.poll)
    else:
        statuses = launch_mod.sweep_status(spec.dir.resolve())
    print(launch_mod.format_status(statuses))
    return 1 if any(s.state == "failed" for s in statuses) else 0


def _status(ns: argparse.Namespace) -> int:
    try:
        statuses = launch_mod.sweep_status(ns.sweep_dir)
    except FileNotFoundError as e:
        print(f"tdmt status: {e}", file=sys.stderr)
        return 2
    print(launch_mod.format_status(statuses))
    return 0


def _report(ns: argparse.Namespace) -> int:
    from tdmt.aggregate import report

    try:
        written = report(ns.sweep_dir, out_dir=ns.out, teachers=ns.teachers)
    except FileNotFoundError as e:
        print(f"tdmt report: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdmt", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", help="launch a sweep (a spec file and/or key=value overrides)")
    p.add_argument("args", nargs="*", help="SPEC.yaml and/or key=value pairs")
    p.add_argument("--dry-run", action="store_true", help="validate and list what would be submitted")
    p.add_argument("--wait", action="store_true", help="with executor=slurm: wait until every element ended")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between status polls with --wait")
    p.set_defaults(func=_sweep)
    p = sub.add_parser("status", help="pending/running/done/failed of each element (log paths of failed ones)")
    p.add_argument("sweep_dir")
    p.set_defaults(func=_status)
    p = sub.add_parser("report", help="tables (Markdown, CSV) and learning curves (PNG) across seeds")
    p.add_argument("sweep_dir")
    p.add_argument("--out", default=None, help="output folder (default: <sweep_dir>/report)")
    p.add_argument("--teachers", default=None,
                   help="folder of teacher runs (default: the sweep's own train_teachers runs, if any)")
    p.set_defaults(func=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())

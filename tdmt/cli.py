"""The ``tdmt`` command: sweeps, their status and report, the runs of a folder, and a run's evaluation.

usage:
    tdmt sweep [SPEC.yaml] [key=value ...] [--dry-run] [--wait]
    tdmt status SWEEP_DIR
    tdmt runs [DIR]                                   every run under DIR (default runs/): recipe, variant, seed,
                                                      steps done / budget, status, best score
    tdmt report DIR... [--out DIR] [--teachers DIR]   tables and curves of the finished runs under the DIRs
    tdmt eval RUN_DIR [episodes=N] [video=true]       evaluation.md/.csv (and videos/*.mp4) in RUN_DIR

``key=value`` overrides the spec (dotted keys for nested ones: ``slurm.partition=gpu``,
``methods.ktm_drl.overrides.online_steps=1000``). A SLURM sweep that reserves GPUs (``slurm.gpus_per_task >= 1``)
passes ``device=cuda`` to every job unless the spec sets ``device`` (docs/gpu.md).
A bad input prints one line ``tdmt <command>: message`` and
exits 2 (``TDMT_DEBUG=1`` shows the traceback).

examples (they run as written):
    tdmt sweep slurm/sweeps/example.yaml executor=local --dry-run
    tdmt sweep name=quick recipe=td3_mt suites=[pendulum-mt3] seeds=[0,1] overrides.total_steps=2000 \
      overrides.eval_every=1000 executor=local
    tdmt status runs/quick
    tdmt runs
    tdmt report runs/quick
    tdmt eval runs/quick/td3_mt/pendulum-mt3/default/seed0 episodes=3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from submitit.core.utils import FailedJobError, FailedSubmissionError

from tdmt import __version__
from tdmt import launch as launch_mod
from tdmt.errors import UserError, cli_errors


def _split(args: Sequence[str]) -> tuple[str | None, list[str]]:
    files = [a for a in args if "=" not in a]
    if len(files) > 1:
        raise UserError(f"one spec file at most, got {files}")
    return (files[0] if files else None), [a for a in args if "=" in a]


def _sweep(ns: argparse.Namespace) -> int:
    path, overrides = _split(ns.args)
    try:
        spec = launch_mod.load_spec(path, overrides)
        submitted = launch_mod.launch(spec, dry_run=ns.dry_run)
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
    print(launch_mod.format_status(launch_mod.sweep_status(ns.sweep_dir)))
    return 0


def _report(ns: argparse.Namespace) -> int:
    from tdmt.aggregate import report

    paper = ns.paper or _sweep_paper(ns.folders)
    written = report(ns.folders, out_dir=ns.out, teachers=ns.teachers)
    if paper:
        from tdmt.paper_report import paper_report

        written += paper_report([*ns.folders, *([ns.teachers] if ns.teachers else [])], paper, written[0].parent)
    for path in written:
        print(path)
    return 0


def _sweep_paper(folders: Sequence[str]) -> str | None:
    """The paper table a sweep's spec names (``paper:``), when one folder is such a sweep."""
    from tdmt.launch import MANIFEST, read_manifest

    papers = {read_manifest(f)["spec"].get("paper") for f in folders if (Path(f) / MANIFEST).exists()}
    papers.discard(None)
    return papers.pop() if len(papers) == 1 else None


def _runs(ns: argparse.Namespace) -> int:
    from tdmt.runs import find_runs, format_runs

    print(format_runs(find_runs(ns.folder), ns.folder))
    return 0


def _options(pairs: Sequence[str], valid: dict[str, type]) -> dict[str, object]:
    """``key=value`` pairs of a subcommand, each of a known key and type."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in valid:
            raise UserError(f"expected key=value with key in {sorted(valid)}, got {pair!r}")
        value = yaml.safe_load(text)
        if type(value) is not valid[key]:
            raise UserError(f"{key}={text!r} should be of type {valid[key].__name__}")
        out[key] = value
    return out


def _eval(ns: argparse.Namespace) -> int:
    from tdmt.runs import evaluate_run

    for path in evaluate_run(ns.run, **_options(ns.options, {"episodes": int, "video": bool})):
        print(path)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line rule: a usage error prints ``tdmt <command>: message`` and exits 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tdmt", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tdmt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", help="launch a sweep (a spec file and/or key=value overrides); a SLURM sweep "
                                     "reserving GPUs passes device=cuda to its jobs unless the spec sets device")
    p.add_argument("args", nargs="*", help="SPEC.yaml and/or key=value pairs")
    p.add_argument("--dry-run", action="store_true", help="validate and list what would be submitted")
    p.add_argument("--wait", action="store_true", help="with executor=slurm: wait until every element ended")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between status polls with --wait")
    p.set_defaults(func=_sweep)
    p = sub.add_parser("status", help="pending/running/done/failed of each element (log paths of failed ones)")
    p.add_argument("sweep_dir")
    p.set_defaults(func=_status)
    p = sub.add_parser("runs", help="every run under a folder: recipe, suite, variant, seed, steps, status, best")
    p.add_argument("folder", nargs="?", default="runs")
    p.set_defaults(func=_runs)
    p = sub.add_parser("report", help="tables (Markdown, CSV) and learning curves (PNG) across seeds")
    p.add_argument("folders", nargs="+", help="sweep folders, folders of runs, or run folders")
    p.add_argument("--out", default=None, help="output folder (default: <folder>/report; several folders: ./report)")
    p.add_argument("--teachers", default=None,
                   help="folder of teacher runs (default: the folder's own train_teachers runs, if any)")
    p.add_argument("--paper", default=None, help="also the paper's table side by side with ours, e.g. ktm-table1 "
                                                 "(default: the table a sweep's spec names; tdmt.paper_tables)")
    p.set_defaults(func=_report)
    p = sub.add_parser("eval", help="evaluate a run's newest checkpoint: evaluation.md/.csv, videos/ with video=true")
    p.add_argument("run", help="the run folder")
    p.add_argument("options", nargs="*", help="episodes=N (default 10), video=true (one MP4 per task)")
    p.set_defaults(func=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    with cli_errors(f"tdmt {ns.command}"):
        return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())

"""Sweeps: a grid of methods (recipes) × variants × suites × seeds, launched as ONE submitit job array.

A sweep spec (YAML, see ``slurm/sweeps/example.yaml``)::

    name: table1                      # results go to <root>/<name>/
    root: runs
    suites: [halfcheetah-mt5, mujoco-mt6]
    seeds: [0, 1, 2]
    overrides: {checkpoint_every: 10000}        # every element
    methods:
      ktm_drl:                                  # a recipe name (tdmt.algos.RECIPES) or a dotted module path
        overrides: {total_steps: 1000000}       # this method only
        variants: {full: {}, no_online: {online_steps: 0}}   # name -> overrides (default: {default: {}})
      td3_mt: {}
    executor: slurm                             # local (default) | slurm | debug
    slurm: {partition: gpu, gpus_per_task: 1, cpus_per_task: 8, mem_gb: 32, timeout_min: 720,
            array_parallelism: 32, account: null, qos: null}

String overrides may name the element: ``{root}``, ``{sweep}``, ``{recipe}``, ``{variant}``, ``{suite}``,
``{seed}`` (e.g. ``teachers_dir: "{root}/teachers/train_teachers/{suite}/default/seed{seed}/teachers"``).

Element ``(method, variant, suite, seed)`` runs ``get_recipe(method).run(cfg)`` in
``<root>/<name>/<method>/<suite>/<variant>/seed<seed>/`` (its resolved ``config.yaml`` is written there at
launch). Everything is validated before anything is submitted: an unknown recipe, suite or config key fails
naming the bad part. Launching again submits only the elements that are neither done (``summary.json``) nor
pending/running; the others resume from their checkpoints.

Executors: ``slurm`` (one ``sbatch --array``; returns at once), ``local`` (this machine, ``local.parallelism``
elements at a time through submitit's local executor; blocks until done) and ``debug`` (in-process, one after
the other; errors raise with their traceback).

Device: a ``slurm`` sweep that reserves GPUs (``slurm.gpus_per_task >= 1``) passes ``device=cuda`` to every job
whose recipe has a ``device`` key, unless the spec sets ``device`` itself; ``local`` and ``debug`` sweeps keep the
recipe's default (``cpu``). Such a sweep can be submitted from a login node without a GPU: everything is validated
there but the presence of CUDA, which the job checks on its node before any work.

Preemption: elements are :class:`submitit.helpers.Checkpointable`. In a submitit job SIGTERM makes the training
loop checkpoint at its next step boundary and carry on, and SIGUSR2 (SLURM's warning before a time limit or a
preemption) makes it checkpoint and stop; the element then asks submitit to requeue it, and the requeued job
resumes from that checkpoint.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import submitit
import torch
import yaml
from submitit.core.job_environment import JobEnvironment, SignalHandler

from tdmt.algos import get_recipe
from tdmt.algos.run import STATE, SUMMARY, StopRequested, check_resume, signal_actions
from tdmt.config import apply_overrides, check_ranges, load_yaml, save_yaml, scale_budgets, to_dict
from tdmt.device import DEVICE_PATTERN
from tdmt.envs import list_suites
from tdmt.progress import tqdm

MANIFEST = "sweep.json"
JOB_FILE = "job.json"
STATES = ("pending", "running", "stopped", "done", "failed")
GRID_KEYS = ("suite", "seed", "run_dir")  # set by the sweep grid, never by overrides
SLURM_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "CONFIGURING", "RESIZING",
                 "RESV_DEL_HOLD"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}


class SweepSpecError(ValueError):
    """A sweep spec that cannot run; the message names the bad part and the valid choices."""


@dataclass
class SlurmOptions:
    """``sbatch`` resources of every array element; ``additional_parameters`` passes any other sbatch option."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float = 8.0
    timeout_min: int = 1440
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    max_num_timeout: int = 20
    setup: list[str] = field(default_factory=list)
    additional_parameters: dict = field(default_factory=dict)

    RANGES: ClassVar[dict[str, str]] = {"gpus_per_task": ">= 0", "cpus_per_task": ">= 1", "mem_gb": "> 0",
                                        "timeout_min": ">= 1", "array_parallelism": ">= 1", "max_num_timeout": ">= 0"}

    def validate(self) -> None:
        check_ranges(self)


@dataclass
class LocalOptions:
    parallelism: int = 1
    timeout_min: int = 7 * 24 * 60
    max_num_timeout: int = 20

    RANGES: ClassVar[dict[str, str]] = {"parallelism": ">= 1", "timeout_min": ">= 1", "max_num_timeout": ">= 0"}

    def validate(self) -> None:
        check_ranges(self)


@dataclass
class Method:
    recipe: str
    overrides: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    stage: str = "main"
    suites: list[str] | None = None  # this method's suites, when not the spec's (e.g. a baseline on its own suite)


@dataclass
class Stage:
    """A group of methods that starts once every stage in ``after`` has finished (SLURM: ``afterok``)."""

    name: str
    after: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Element:
    """One array element: a recipe, its resolved config (plain values) and its run folder."""

    recipe: str
    variant: str
    suite: str
    seed: int
    run_dir: str
    config: dict[str, Any] = field(hash=False, compare=False)
    launch_dir: str = ""
    stage: str = "main"

    @property
    def key(self) -> str:
        return f"{self.recipe}/{self.suite}/{self.variant}/seed{self.seed}"


@dataclass
class SweepSpec:
    name: str
    suites: list[str]
    seeds: list[int]
    methods: dict[str, Method]
    overrides: dict[str, Any] = field(default_factory=dict)
    executor: Literal["local", "slurm", "debug"] = "local"
    root: str = "runs"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    local: LocalOptions = field(default_factory=LocalOptions)
    stages: list[Stage] = field(default_factory=lambda: [Stage("main")])
    scale: float = 1.0  # budget factor for a smoke run of the whole pipeline (tdmt.config.scale_budgets)
    paper: str | None = None  # the paper table this sweep reproduces (tdmt.paper_tables), for tdmt report --paper

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.name


# ---------------------------------------------------------------------------------------------- spec parsing
SPEC_KEYS = ("name", "root", "suites", "seeds", "methods", "recipe", "variants", "overrides", "executor",
             "slurm", "local", "stages", "scale", "paper")
STAGE_KEYS = ("methods", "recipe", "variants", "after")


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepSpecError(f"{where} must be a mapping of key: value, got {value!r}")
    return value


def _list(value: Any, where: str, kind: type) -> list:
    items = value if isinstance(value, list) else [value]
    bad = [v for v in items if not isinstance(v, kind) or isinstance(v, bool)]
    if not items or bad:
        raise SweepSpecError(f"{where} must be a non-empty list of {kind.__name__}, got {value!r}")
    return items


def _message(e: Exception) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)  # str(KeyError) adds quotes


def _options(cls: type, value: Any, where: str) -> Any:
    try:
        return apply_overrides(cls(), _mapping(value, where))
    except (KeyError, TypeError, ValueError) as e:
        raise SweepSpecError(f"{where}: {_message(e)}") from e


def _stages(data: dict) -> tuple[list[Stage], dict[str, Method]]:
    """The stages in launch order and every method (tagged with its stage); a spec without ``stages`` is one
    stage ``main``."""
    if "stages" not in data:
        return [Stage("main")], _methods(data)
    clash = sorted({"methods", "recipe", "variants"} & set(data))
    if clash:
        raise SweepSpecError(f"give methods inside 'stages' or at the top level, not both (top level has {clash})")
    raw = _mapping(data["stages"], "stages")
    if not raw:
        raise SweepSpecError("'stages' is empty; give stage name -> {methods, after}")
    stages, methods = [], {}
    for name, body in raw.items():
        body = _mapping(body, f"stages.{name}")
        unknown = sorted(set(body) - set(STAGE_KEYS))
        if unknown:
            raise SweepSpecError(f"stages.{name}: unknown keys {unknown}; valid: {list(STAGE_KEYS)}")
        after = [str(a) for a in (body.get("after") or [])]
        missing = [a for a in after if a not in [st.name for st in stages]]
        if missing:
            raise SweepSpecError(f"stages.{name}.after names {missing}, which is not an earlier stage; "
                                 f"valid: {[st.name for st in stages]}")
        stages.append(Stage(str(name), after))
        for recipe, method in _methods(body).items():
            if recipe in methods:
                raise SweepSpecError(f"stages.{name}: method {recipe!r} is already in stage {methods[recipe].stage!r}")
            methods[recipe] = dataclasses.replace(method, stage=str(name))
    return stages, methods


def _methods(data: dict) -> dict[str, Method]:
    if "recipe" in data:
        if "methods" in data:
            raise SweepSpecError("give either 'recipe' (+ 'variants') or 'methods', not both")
        raw = {data["recipe"]: {"variants": data.get("variants")}}
    elif "variants" in data:
        raise SweepSpecError("'variants' at the top level needs 'recipe'; under 'methods' give variants per method")
    else:
        raw = data.get("methods")
        if isinstance(raw, list):
            raw = {name: {} for name in raw}
        if not raw:
            raise SweepSpecError("the spec needs 'methods' (recipe name -> {overrides, variants}) or 'recipe'")
    methods = {}
    for recipe, body in _mapping(raw, "methods").items():
        body = _mapping(body, f"methods.{recipe}")
        unknown = sorted(set(body) - {"overrides", "variants", "suites"})
        if unknown:
            raise SweepSpecError(f"methods.{recipe}: unknown keys {unknown}; valid: ['overrides', 'variants', "
                                 "'suites']")
        variants = _mapping(body.get("variants"), f"methods.{recipe}.variants") or {"default": {}}
        variants = {str(v): _mapping(o, f"methods.{recipe}.variants.{v}") for v, o in variants.items()}
        suites = _list(body["suites"], f"methods.{recipe}.suites", str) if "suites" in body else None
        unknown_suites = [s for s in suites or [] if s not in list_suites()]
        if unknown_suites:
            raise SweepSpecError(f"methods.{recipe}.suites: unknown suite(s) {unknown_suites}; valid: {list_suites()}")
        methods[str(recipe)] = Method(str(recipe), _mapping(body.get("overrides"), f"methods.{recipe}.overrides"),
                                      variants, suites=suites)
    return methods


def parse_spec(data: dict[str, Any]) -> SweepSpec:
    """A :class:`SweepSpec` from a plain mapping (a loaded YAML file with command-line overrides applied)."""
    data = _mapping(data, "the sweep spec")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise SweepSpecError(f"unknown sweep spec keys {unknown}; valid: {list(SPEC_KEYS)}")
    if not data.get("name") or not isinstance(data["name"], str) or "/" in data["name"]:
        raise SweepSpecError(f"the spec needs a 'name' (a folder name under root), got {data.get('name')!r}")
    executor = data.get("executor", "local")
    if executor not in ("local", "slurm", "debug"):
        raise SweepSpecError(f"executor={executor!r} is not valid; valid: ['local', 'slurm', 'debug']")
    suites = _list(data.get("suites"), "suites", str)
    valid_suites = list_suites()
    bad = [s for s in suites if s not in valid_suites]
    if bad:
        raise SweepSpecError(f"unknown suite(s) {bad}; valid: {valid_suites}")
    seeds = _list(data.get("seeds", [0]), "seeds", int)
    for name, items in (("suites", suites), ("seeds", seeds)):
        repeated = sorted({x for x in items if items.count(x) > 1})
        if repeated:  # two elements would train in one folder
            raise SweepSpecError(f"{name}={items} repeats {repeated}; give each at most once")
    if any(seed < 0 for seed in seeds):
        raise SweepSpecError(f"seeds={seeds} has a negative seed; valid: integers >= 0")
    scale = data.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise SweepSpecError(f"scale={scale!r} is not valid; valid: a number in (0, 1] (budget factor)")
    stages, methods = _stages(data)
    paper = data.get("paper")
    if paper is not None:
        from tdmt.paper_tables import list_tables

        if paper not in list_tables():
            raise SweepSpecError(f"paper={paper!r} is not a paper table; valid: {list_tables()}")
    return SweepSpec(paper=paper,
        name=data["name"], suites=suites, seeds=seeds, methods=methods, stages=stages, scale=float(scale),
        overrides=_mapping(data.get("overrides"), "overrides"), executor=executor, root=str(data.get("root", "runs")),
        slurm=_options(SlurmOptions, data.get("slurm"), "slurm"),
        local=_options(LocalOptions, data.get("local"), "local"))


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``key="a.b"`` (creating the inner mappings)."""
    *parents, last = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise SweepSpecError(f"cannot set {key!r}: {part!r} is not a mapping")
    data[last] = value


def load_spec(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> SweepSpec:
    """Read a spec file (or start empty) and apply ``key=value`` overrides (dotted keys for nested ones)."""
    data = load_yaml(path) if path else {}
    for arg in overrides:
        if "=" not in arg:
            raise SweepSpecError(f"sweep overrides are key=value pairs, got {arg!r}")
        key, text = arg.split("=", 1)
        set_dotted(data, key, yaml.safe_load(text) if text else "")
    return parse_spec(data)


def _resolve(method: Method, variant: str, suite: str, seed: int, spec: SweepSpec) -> Element:
    where = f"methods.{method.recipe}.variants.{variant}"
    try:
        module = get_recipe(method.recipe)
    except ValueError as e:
        raise SweepSpecError(f"methods.{method.recipe}: {e}") from e
    for source, values in (("overrides", spec.overrides), (f"methods.{method.recipe}.overrides", method.overrides),
                           (where, method.variants[variant])):
        clash = sorted(set(values) & set(GRID_KEYS))
        if clash:
            raise SweepSpecError(f"{source}: {clash} are set by the sweep grid (suites, seeds, folders)")
    run_dir = (spec.dir / method.recipe / suite / variant / f"seed{seed}").resolve()
    fields = {"root": str(Path(spec.root).resolve()), "sweep": str(spec.dir.resolve()), "recipe": method.recipe,
              "variant": variant, "suite": suite, "seed": seed}
    values = {**spec.overrides, **method.overrides, **method.variants[variant]}
    try:
        values = {k: v.format(**fields) if isinstance(v, str) and "{" in v else v for k, v in values.items()}
    except (KeyError, IndexError, ValueError) as e:
        raise SweepSpecError(f"{where}: bad placeholder {e} in {values}; valid: {sorted(fields)}") from e
    values.update(suite=suite, seed=seed, run_dir=str(run_dir))
    if uses_gpus(spec) and "device" not in values and _has_key(module.Config, "device"):
        values["device"] = "cuda"
    try:
        cfg = job_config(module.Config, values, spec)
    except (KeyError, TypeError, ValueError) as e:
        raise SweepSpecError(f"{where} (suite {suite}, seed {seed}): {_message(e)}") from e
    return Element(method.recipe, variant, suite, seed, str(run_dir), to_dict(cfg), os.getcwd(), method.stage)


def uses_gpus(spec: SweepSpec) -> bool:
    """The sweep's jobs run on nodes with GPUs reserved for them (``executor=slurm``, ``gpus_per_task >= 1``)."""
    return spec.executor == "slurm" and spec.slurm.gpus_per_task >= 1


def _has_key(cls: type, key: str) -> bool:
    return dataclasses.is_dataclass(cls) and key in {f.name for f in dataclasses.fields(cls)}


def job_config(cls: type, values: dict[str, Any], spec: SweepSpec, scale: bool = True) -> Any:
    """``cls()`` with ``values`` (and, with ``scale``, the spec's budget factor), validated on this machine.

    A SLURM job's ``device=cuda[:N]`` runs on its node, which this (login) node may not resemble: where no CUDA is
    visible here, everything is validated but the presence of CUDA (with ``device=cpu`` in its place), and the job
    validates its config again on the node, before any work.
    """
    device = str(values.get("device", ""))
    on_node = spec.executor == "slurm" and device.startswith("cuda") and bool(DEVICE_PATTERN.match(device)) \
        and not torch.cuda.is_available()
    if not on_node:
        cfg = apply_overrides(cls(), values)
        return scale_budgets(cfg, spec.scale) if scale and spec.scale != 1.0 else cfg
    wanted = apply_overrides(cls(), values, validate=False)
    if "cuda" not in getattr(cls, "DEVICES", ("cuda",)):
        raise ValueError(f"device={device!r} is not supported by this recipe; valid: {list(cls.DEVICES)}")
    cfg = apply_overrides(wanted, {"device": "cpu", "cudagraphs": False})  # cudagraphs=true needs CUDA too
    if scale and spec.scale != 1.0:
        cfg = scale_budgets(cfg, spec.scale)
    return dataclasses.replace(cfg, device=wanted.device, cudagraphs=wanted.cudagraphs)


def expand(spec: SweepSpec) -> list[Element]:
    """Every element of the grid with its resolved config; raises :class:`SweepSpecError` before any submission."""
    elements = [_resolve(method, variant, suite, seed, spec)
                for method in spec.methods.values()
                for variant, suite, seed in itertools.product(method.variants, method.suites or spec.suites,
                                                              spec.seeds)]
    folders: dict[str, str] = {}
    for element in elements:
        if element.run_dir in folders:
            raise SweepSpecError(f"{element.key} and {folders[element.run_dir]} resolve to one folder "
                                 f"{element.run_dir}; give them different variants")
        folders[element.run_dir] = element.key
    return elements


# ---------------------------------------------------------------------------------------------- the job
def _write_job_file(run_dir: str | Path, **info: Any) -> None:
    path = Path(run_dir) / JOB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(JOB_FILE + ".tmp")
    tmp.write_text(json.dumps({**info, "time": time.time()}, indent=1))
    os.replace(tmp, path)


def read_job_file(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / JOB_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _submitit_info() -> dict[str, Any]:
    """Job id and log of the submitit job running this process (``None`` outside one, e.g. executor=debug)."""
    try:
        env = JobEnvironment()
    except RuntimeError:
        return {"job_id": None, "log": None}
    return {"job_id": env.job_id, "log": str(env.paths.stdout)}


def _submitit_requeue_handler() -> SignalHandler | None:
    """submitit's checkpoint-and-requeue handler of this job, when running inside a submitit job."""
    handler = signal.getsignal(JobEnvironment._usr_sig())
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, SignalHandler) else None


class SweepRunner(submitit.helpers.Checkpointable):
    """The callable of every array element: runs the element's recipe, records its state in ``job.json``,
    and on SIGUSR2 (checkpoint saved by the training loop) hands over to submitit, which requeues the job."""

    def __call__(self, element: Element) -> dict:
        if element.launch_dir and element.launch_dir not in sys.path:
            sys.path.append(element.launch_dir)  # dotted recipe paths relative to where the sweep was launched
        summary_file = Path(element.run_dir) / SUMMARY
        if summary_file.exists():
            return json.loads(summary_file.read_text())
        info = {**_submitit_info(), "host": socket.gethostname(), "pid": os.getpid(), "element": element.key}
        _write_job_file(element.run_dir, state="running", **info)
        handler = _submitit_requeue_handler()
        # In a submitit job SIGTERM precedes SIGUSR2 on preemption (and scancel): checkpoint, but keep going.
        actions = {signal.SIGTERM: "save"} if handler else {}
        try:
            module = get_recipe(element.recipe)
            cfg = apply_overrides(module.Config(), element.config)
            with signal_actions(actions):
                summary = module.run(cfg)
        except StopRequested as e:
            if handler is None or e.signum != JobEnvironment._usr_sig():
                _write_job_file(element.run_dir, state="stopped", note=str(e), **info)
                raise
            stop = e
        except BaseException as e:
            if not isinstance(e, SystemExit):  # submitit's requeue exits with SystemExit: not a failure
                _write_job_file(element.run_dir, state="failed", error=f"{type(e).__name__}: {e}",
                                traceback=traceback.format_exc(limit=20), **info)
            raise
        else:
            _write_job_file(element.run_dir, state="done", **info)
            return summary
        _write_job_file(element.run_dir, state="requeued", note=str(stop), **info)
        try:
            handler.checkpoint_and_try_requeue(stop.signum)  # requeues, then exits with SystemExit
        except Exception as e:  # e.g. timed out too many times: the job ends here
            _write_job_file(element.run_dir, state="failed", error=f"not requeued: {e}", **info)
            raise
        raise RuntimeError("submitit did not exit after requeueing")  # pragma: no cover

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit before requeueing: the training loop already saved its state; resume from it."""
        element = args[0] if args else kwargs["element"]
        _write_job_file(element.run_dir, state="requeued", **_submitit_info())
        return super().checkpoint(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- manifest
def read_manifest(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(sweep_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep folder (no {MANIFEST}); launch one with `tdmt sweep`")
    return json.loads(path.read_text())


def _write_manifest(sweep_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = sweep_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(tmp, sweep_dir / MANIFEST)


# ---------------------------------------------------------------------------------------------- status
@dataclass
class ElementStatus:
    key: str
    state: str
    run_dir: str
    detail: str = ""
    log: str | None = None


def _expand_array_ids(job_id: str) -> list[str]:
    """``"12_[0-2,5%4]"`` -> ``["12_0", "12_1", "12_2", "12_5"]`` (sacct collapses pending array tasks)."""
    if "_[" not in job_id:
        return [job_id]
    base, ranges = job_id.split("_[", 1)
    ids = []
    for part in ranges.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        ids += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return ids


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """``{job id: SLURM state}`` from one ``sacct`` call (empty when sacct is not available)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            for one in _expand_array_ids(jid):
                states[one] = state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return states


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _progress(run_dir: Path) -> str:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*")) if (run_dir / "checkpoints").exists() else []
    return f"checkpoint at step {int(ckpts[-1].name[5:])}" if ckpts else ""


def _run_state(run_dir: Path) -> dict[str, Any]:
    """The training loop's own ``state.json`` (see :class:`tdmt.algos.run.TrainingRun`)."""
    try:
        return json.loads((run_dir / STATE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def element_status(entry: dict[str, Any], slurm: dict[str, str]) -> ElementStatus:
    """State of one manifest entry from its run folder, its ``job.json`` and (on SLURM) sacct."""
    run_dir = Path(entry["run_dir"])
    jobs = entry.get("jobs", [])
    last = jobs[-1] if jobs else {}
    job = read_job_file(run_dir)

    def status(state: str, detail: str = "") -> ElementStatus:
        return ElementStatus(entry["key"], state, str(run_dir), detail, job.get("log") or last.get("log"))

    if (run_dir / SUMMARY).exists():
        return status("done")
    if not last:
        return status("pending", "not submitted")
    progress = _progress(run_dir)
    if job.get("state") == "failed":
        return status("failed", job.get("error", ""))
    if job.get("state") == "stopped":
        return status("stopped", job.get("note", progress))
    if last.get("executor") == "slurm":
        state = slurm.get(last["job_id"])
        if state is None or state in SLURM_PENDING:
            return status("pending", f"{state or 'unknown to sacct'} {progress}".strip())
        if state in SLURM_RUNNING:
            return status("running", progress)
        return status("failed", f"SLURM {state}")
    controller_alive = _pid_alive(last.get("controller_pid"))
    if _run_state(run_dir).get("state") == "stopped" and not _pid_alive(job.get("pid")) and not controller_alive:
        return status("stopped", f"at step {_run_state(run_dir).get('step')}: launch again to resume")
    if job.get("state") in ("running", "requeued"):
        if job.get("host") == socket.gethostname() and not _pid_alive(job.get("pid")) and not controller_alive:
            return status("failed", f"process {job.get('pid')} died")
        return status("running" if job["state"] == "running" else "pending", progress)
    if controller_alive:
        return status("pending")
    return status("failed", "ended without a result")


def statuses_of(entries: list[dict[str, Any]]) -> list[ElementStatus]:
    """:func:`element_status` of manifest entries, with one sacct call for all of them."""
    slurm_ids = [e["jobs"][-1]["job_id"] for e in entries if e.get("jobs") and e["jobs"][-1]["executor"] == "slurm"]
    slurm = slurm_states(slurm_ids)
    return [element_status(e, slurm) for e in entries]


def sweep_status(sweep_dir: str | os.PathLike) -> list[ElementStatus]:
    """State of every element of the sweep in ``sweep_dir``."""
    return statuses_of(read_manifest(sweep_dir)["elements"])


def format_status(statuses: list[ElementStatus]) -> str:
    counts = {s: sum(st.state == s for st in statuses) for s in STATES}
    width = max((len(s.key) for s in statuses), default=10)
    lines = [f"{s.key:<{width}}  {s.state:<8} {s.detail}" for s in statuses]
    failed = [s for s in statuses if s.state == "failed"]
    if failed:
        lines += ["", "failed elements (logs):"] + [f"  {s.key}: {s.log or '(no log)'}  run_dir {s.run_dir}"
                                                    for s in failed]
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items())]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- launching
def _slurm_executor(spec: SweepSpec, folder: Path) -> submitit.SlurmExecutor:
    opts = spec.slurm
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=opts.max_num_timeout)
    params: dict[str, Any] = dict(
        job_name=f"tdmt-{spec.name}", time=opts.timeout_min, cpus_per_task=opts.cpus_per_task,
        mem=f"{int(opts.mem_gb * 1024)}M", array_parallelism=opts.array_parallelism, ntasks_per_node=1,
        setup=[f"export OMP_NUM_THREADS={opts.cpus_per_task}", *opts.setup],
        additional_parameters=dict(opts.additional_parameters))
    for key, value in (("partition", opts.partition), ("account", opts.account), ("qos", opts.qos)):
        if value:
            params[key] = value
    if opts.gpus_per_task:
        params["gpus_per_node"] = opts.gpus_per_task
    executor.update_parameters(**params)
    return executor


def _entry(element: Element) -> dict[str, Any]:
    data = dataclasses.asdict(element)
    data.pop("config")
    return {"key": element.key, **data, "jobs": []}


def _submit_slurm(spec: SweepSpec, todo: list[Element], folder: Path, after: list[str]) -> list[dict[str, Any]]:
    """One job array for ``todo``; with ``after`` (job ids), it starts only when all of them ended well
    (``afterok``) and is cancelled by SLURM if one of them fails (``kill-on-invalid-dep``)."""
    executor = _slurm_executor(spec, folder)
    if after:
        extra = {**spec.slurm.additional_parameters, "dependency": "afterok:" + ":".join(after),
                 "kill_on_invalid_dep": "yes"}
        executor.update_parameters(additional_parameters=extra)
    jobs = executor.map_array(SweepRunner(), todo)
    return [{"executor": "slurm", "job_id": j.job_id, "log": str(j.paths.stdout)} for j in jobs]


def _run_local(spec: SweepSpec, todo: list[Element], folder: Path, on_submit) -> None:
    """``local.parallelism`` elements at a time through submitit's local executor (blocks until all end)."""
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=spec.local.max_num_timeout)
    executor.update_parameters(timeout_min=spec.local.timeout_min)
    queue, running = list(todo), []
    progress = tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="run", disable=None)
    try:
        while queue or running:
            while queue and len(running) < spec.local.parallelism:
                element = queue.pop(0)
                job = executor.submit(SweepRunner(), element)
                running.append(job)
                on_submit(element, {"executor": "local", "job_id": job.job_id, "controller_pid": int(job.job_id),
                                    "log": str(job.paths.stdout)})
            time.sleep(0.5)
            still = [j for j in running if not j.done()]
            progress.update(len(running) - len(still))
            running = still
    except KeyboardInterrupt:
        for job in running:  # SIGINT: each training loop saves at its next step boundary, then stops
            job.cancel()
        raise
    finally:
        progress.close()


def _run_debug(todo: list[Element], on_submit) -> None:
    for element in todo:
        on_submit(element, {"executor": "debug", "job_id": f"debug-{os.getpid()}", "log": None})
        SweepRunner()(element)


def _unfinished_jobs(stage: Stage, elements: list[Element], entries: dict[str, dict[str, Any]]) -> list[str]:
    """Job (array) ids of the elements of ``stage``'s prerequisite stages that are not done yet."""
    before = [e for e in elements if e.stage in stage.after]
    states = {s.key: s.state for s in statuses_of([entries[e.key] for e in before])}
    ids = {entries[e.key]["jobs"][-1]["job_id"].split("_")[0] for e in before
           if states[e.key] != "done" and entries[e.key]["jobs"]}
    return sorted(ids)


def launch(spec: SweepSpec, dry_run: bool = False) -> list[Element]:
    """Validate the whole grid, then submit the elements that are not done, pending or running, stage by stage.

    On SLURM every stage is submitted at once as its own job array, held (``afterok``) until the arrays of the
    stages it comes after have ended well; locally the stages run in order, and a stage whose prerequisites did
    not all finish is not started. Returns the submitted elements (with ``dry_run``: those that would be).
    """
    elements = expand(spec)
    sweep_dir = spec.dir.resolve()
    manifest = read_manifest(sweep_dir) if (sweep_dir / MANIFEST).exists() else {"elements": []}
    entries = {e["key"]: e for e in manifest["elements"]}
    for element in elements:
        entries.setdefault(element.key, _entry(element))
    states = {s.key: s.state for s in statuses_of([entries[e.key] for e in elements])}
    todo = [e for e in elements if states[e.key] in ("failed", "stopped") or not entries[e.key]["jobs"]]
    configs = {e.key: job_config(get_recipe(e.recipe).Config, e.config, spec, scale=False) for e in todo}
    for element in todo:  # a folder that holds another configuration's run: refuse before submitting anything
        try:
            check_resume(Path(element.run_dir), configs[element.key])
        except ValueError as e:
            raise SweepSpecError(f"{element.key}: {_message(e)}") from e
    skipped = len(elements) - len(todo)
    stages = f", stages {' -> '.join(st.name for st in spec.stages)}" if len(spec.stages) > 1 else ""
    scale = f", budgets x{spec.scale:g}" if spec.scale != 1.0 else ""
    devices = sorted({str(e.config.get("device", "cpu")) for e in elements})
    print(f"[tdmt] sweep {spec.name}: {len(elements)} elements, {len(todo)} to submit, {skipped} done/pending/"
          f"running ({spec.executor} executor{stages}{scale}, device {'/'.join(devices)}, results in {sweep_dir})",
          flush=True)
    if dry_run or not todo:
        return todo
    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"name": spec.name, "spec": to_dict(spec), "elements": [entries[k] for k in entries]}
    for element in todo:
        run_dir = Path(element.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(configs[element.key], run_dir / "config.yaml")
        _write_job_file(run_dir, state="submitted")

    def on_submit(element: Element, job: dict[str, Any]) -> None:
        entries[element.key]["jobs"].append({**job, "submitted": time.time()})
        _write_manifest(sweep_dir, manifest)

    folder = sweep_dir / "logs"
    for stage in spec.stages:
        batch = [e for e in todo if e.stage == stage.name]
        if not batch:
            continue
        after = _unfinished_jobs(stage, elements, entries) if stage.after else []
        if spec.executor == "slurm":
            for element, job in zip(batch, _submit_slurm(spec, batch, folder, after)):
                on_submit(element, job)
            held = f", held until {', '.join(after)} end well" if after else ""
            print(f"[tdmt] stage {stage.name}: submitted job array "
                  f"{entries[batch[0].key]['jobs'][-1]['job_id'].split('_')[0]}{held}", flush=True)
        elif after:
            print(f"[tdmt] stage {stage.name} not started: stage(s) {stage.after} did not all finish "
                  f"(see tdmt status {sweep_dir})", flush=True)
        elif spec.executor == "local":
            _run_local(spec, batch, folder, on_submit)
        else:
            _run_debug(batch, on_submit)
    if spec.executor == "slurm":
        print(f"[tdmt] follow it with: tdmt status {sweep_dir}", flush=True)
    return todo


def wait(sweep_dir: str | os.PathLike, poll_s: float = 5.0, timeout_s: float | None = None) -> list[ElementStatus]:
    """Poll :func:`sweep_status` until no element is pending or running (or ``timeout_s`` passes)."""
    start = time.monotonic()
    while True:
        statuses = sweep_status(sweep_dir)
        if all(s.state in ("done", "failed", "stopped") for s in statuses):
            return statuses
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"sweep {sweep_dir} not finished after {timeout_s} s:\n{format_status(statuses)}")
        time.sleep(poll_s)

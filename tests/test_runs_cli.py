"""`tdmt runs`, `tdmt eval`, `tdmt report` on any folder of runs, `tdmt --version` and one-line CLI errors."""

import json
import os
import shutil
import socket

import imageio.v2 as imageio
import pytest
import yaml

from tdmt import __version__, cli
from tdmt.algos import sac_mt
from tdmt.config import apply_overrides, save_yaml
from tdmt.logger import CSVLog
from tdmt.runs import evaluate_run, find_runs, read_run, rendering_available

TINY = dict(total_steps=40, exploration_steps=20, eval_every=20, checkpoint_every=40, eval_episodes=1,
            final_eval_episodes=1, hidden=[16], progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real (tiny) sac_mt run on control-mt2 (Pendulum, and Reacher: a MuJoCo task): ~5 s."""
    folder = tmp_path_factory.mktemp("trained") / "sac"
    sac_mt.run(apply_overrides(sac_mt.Config(), dict(suite="control-mt2", run_dir=str(folder), **TINY)))
    return folder


def _fake_run(folder, state=None, rows=(), **config):
    """A run folder as TrainingRun leaves it: config.yaml, eval.csv rows (step, mean return), state.json."""
    folder.mkdir(parents=True)
    save_yaml(apply_overrides(sac_mt.Config(), {"suite": "pendulum-mt3", "run_dir": str(folder), **config}),
              folder / "config.yaml")
    log = CSVLog(folder / "eval.csv")
    for step, value in rows:
        log.log(step, **{"eval/mean_return": value})
    if state:
        (folder / "state.json").write_text(json.dumps({"host": socket.gethostname(), **state}))
    return folder


def _main(capsys, *argv):
    """``tdmt argv`` -> (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_runs_lists_hand_made_and_sweep_runs(trained, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(trained, root / "by_hand" / "done")
    _fake_run(root / "by_hand" / "stopped", {"state": "stopped", "step": 300, "pid": 1}, [(100, -900.0), (300, -700.5)],
              backbone="mhsac", total_steps=1000)
    _fake_run(root / "by_hand" / "running", {"state": "running", "step": 0, "pid": os.getpid()}, [(500, -800.0)],
              seed=3, total_steps=1000)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    _fake_run(root / "by_hand" / "died", {"state": "running", "step": 0, "pid": dead}, seed=4)
    # a sweep element: the launcher's job.json and the folder layout <recipe>/<suite>/<variant>/seed<k>
    element = _fake_run(root / "sweep" / "sac_mt" / "pendulum-mt3" / "lr" / "seed1", None, [(200, -1100.0)], seed=1,
                        lr=3e-4)
    (element / "job.json").write_text(json.dumps({"state": "failed", "error": "RuntimeError: boom",
                                                  "element": "sac_mt/pendulum-mt3/lr/seed1"}))
    runs = {r.dir.name: r for r in find_runs(root)}
    assert sorted(runs) == ["died", "done", "running", "seed1", "stopped"]
    # summary.json is strict JSON: NaN/Infinity would be refused here
    json.loads((trained / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    done = runs["done"]
    assert (done.recipe, done.suite, done.seed, done.status, done.step, done.budget) == (
        "sac_mt", "control-mt2", 0, "done", 40, 40)
    assert done.best == pytest.approx(max(float(r["eval/mean_return"]) for r in CSVLog(trained / "eval.csv").rows()))
    assert done.variant == "hidden=16,exploration_steps=20" and done.method == "MTSAC"
    stopped = runs["stopped"]
    assert (stopped.status, stopped.step, stopped.budget, stopped.best, stopped.variant, stopped.method) == (
        "stopped", 300, 1000, -700.5, "backbone=mhsac", "MHSAC")
    assert (runs["running"].status, runs["running"].step, runs["running"].seed) == ("running", 500, 3)
    assert (runs["died"].status, runs["died"].detail) == ("failed", f"process {dead} died")
    assert (runs["seed1"].status, runs["seed1"].detail, runs["seed1"].variant) == (
        "failed", "RuntimeError: boom", "lr=0.0003")
    code, out, _ = _main(capsys, "runs", str(root))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["recipe", "suite", "variant", "seed", "steps", "status", "best", "folder"]
    assert any(line.split()[:6] == ["sac_mt", "control-mt2", "hidden=16,exploration_steps=20", "0", "40/40", "done"]
               for line in lines)
    assert any(line.split()[4:7] == ["300/1000", "stopped", "-700.5"] for line in lines)
    assert lines[-1] == "5 runs: 1 done, 1 running, 1 stopped, 2 failed"


def test_runs_of_a_launched_sweep_include_its_pending_elements(tmp_path, capsys):
    """A real sweep (debug executor): its finished element is "done", an element never submitted is "pending"."""
    code, _, err = _main(capsys, "sweep", "name=s", "recipe=sac_mt", "suites=[pendulum-mt3]", "seeds=[0]",
                         f"root={tmp_path}", "executor=debug",
                         *(f"overrides.{k}={json.dumps(v)}" for k, v in TINY.items()))
    assert code == 0, err
    manifest = tmp_path / "s" / "sweep.json"
    data = json.loads(manifest.read_text())
    pending = {**data["elements"][0], "key": "sac_mt/pendulum-mt3/default/seed1", "seed": 1, "jobs": [],
               "run_dir": str(tmp_path / "s" / "sac_mt" / "pendulum-mt3" / "default" / "seed1")}
    manifest.write_text(json.dumps({**data, "elements": [*data["elements"], pending]}))
    runs = find_runs(tmp_path)
    assert sorted((r.seed, r.status, r.step, r.budget) for r in runs) == [(0, "done", 40, 40), (1, "pending", 0, None)]


def test_eval_writes_its_table_and_one_video_per_mujoco_task(trained, capsys):
    code, out, err = _main(capsys, "eval", str(trained), "episodes=2")
    assert code == 0, err
    table = (trained / "evaluation.csv").read_text().splitlines()
    assert table[0] == "task,return_mean,return_std,success_rate"
    returns = {line.split(",")[0]: float(line.split(",")[1]) for line in table[1:]}
    assert list(returns) == ["Pendulum", "Reacher"]
    assert -16.3 * 200 <= returns["Pendulum"] <= 0 and -200 <= returns["Reacher"] <= 0
    assert "checkpoint of step 40: 2 deterministic episodes per task" in (trained / "evaluation.md").read_text()
    again = evaluate_run(trained, episodes=2)  # deterministic: the same policy on the same seeded episodes
    assert (trained / "evaluation.csv").read_text().splitlines() == table and again[1].name == "evaluation.csv"
    why = rendering_available()
    if why:
        pytest.skip(f"video=true not checked: {why}")
    code, out, err = _main(capsys, "eval", str(trained), "episodes=1", "video=true")
    assert code == 0, err
    assert "no video of Pendulum: not a MuJoCo task" in out
    reader = imageio.get_reader(str(trained / "videos" / "Reacher.mp4"), format="ffmpeg")
    frames = [frame for frame in reader]  # not list(reader): its len() is inf, a bad length hint
    assert 1 <= len(frames) <= 50 and frames[0].shape == (480, 480, 3) and frames[0].max() > 0
    assert not (trained / "videos" / "Pendulum.mp4").exists()


def test_report_works_on_any_folder_of_runs(trained, tmp_path, capsys):
    """Runs that are not in a sweep layout (today's `tdmt report runs/`): one table per suite, paper names."""
    shutil.copytree(trained, tmp_path / "a")
    other = tmp_path / "nested" / "b"
    shutil.copytree(trained, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    (other / "config.yaml").write_text(yaml.safe_dump({**cfg, "backbone": "mhsac", "seed": 1}))
    code, out, err = _main(capsys, "report", str(tmp_path))
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "2 finished runs." in report and "Seeds per method: MHSAC 1, MTSAC 1" in report
    assert "| task | MHSAC | MTSAC |" in report
    assert (tmp_path / "report" / "control-mt2_curves.png").stat().st_size > 10_000
    # several folders (here two run folders), a run counted once
    code, out, err = _main(capsys, "report", str(tmp_path / "a"), str(other), str(tmp_path / "a"), "--out",
                           str(tmp_path / "two"))
    assert code == 0, err
    assert "2 finished runs." in (tmp_path / "two" / "report.md").read_text()


def test_version_and_one_line_errors(tmp_path, capsys):
    code, out, _ = _main(capsys, "--version")
    assert (code, out.strip()) == (0, f"tdmt {__version__}")
    _fake_run(tmp_path / "r")  # a run folder without checkpoint
    cases = [
        (("runs", str(tmp_path / "nope")), "tdmt runs: no folder"),
        (("report", str(tmp_path / "nope")), "tdmt report: no folder"),
        (("report", str(tmp_path)), "tdmt report: no finished run (a run folder with summary.json) under"),
        (("status", str(tmp_path)), "tdmt status: "),
        (("eval", str(tmp_path / "nope")), "tdmt eval: "),
        (("eval", str(tmp_path / "r")), "tdmt eval: run " + str(tmp_path / "r") + " has no checkpoint"),
        (("eval", str(tmp_path / "r"), "episodes=ten"), "tdmt eval: episodes='ten' should be of type int"),
        (("eval", str(tmp_path / "r"), "frames=3"), "tdmt eval: expected key=value with key in ['episodes', 'video']"),
        (("sweep", "a.yaml", "b.yaml"), "tdmt sweep: one spec file at most"),
        (("sweep", "name=x", "recipe=nope", "suites=[pendulum-mt3]"), "tdmt sweep: methods.nope: unknown recipe"),
        (("frobnicate",), "tdmt: argument command: invalid choice: 'frobnicate'"),
        (("eval",), "tdmt eval: the following arguments are required: run"),
    ]
    for argv, start in cases:
        code, _, err = _main(capsys, *argv)
        assert code == 2 and err.startswith(start) and err.count("\n") == 1, (argv, err)


def _help_examples() -> list[list[str]]:
    """The example command lines of ``tdmt --help`` (continuation lines joined)."""
    text = cli.__doc__.split("examples (they run as written):")[1].replace("\\\n", " ")
    return [line.split()[1:] for line in text.splitlines() if line.strip().startswith("tdmt ")]


def test_help_examples_run_as_written(tmp_path, capsys, monkeypatch):
    """Every `tdmt sweep` example of --help is a valid sweep (checked with --dry-run: configs resolved and validated,
    nothing trained); the other commands parse. Written to a temporary root."""
    examples = _help_examples()
    assert {e[0] for e in examples} == {"sweep", "status", "runs", "report", "eval"}
    parser = cli.build_parser()
    for argv in examples:
        if argv[0] == "sweep":
            pairs = [a for a in argv if not a.startswith("--")]
            code, out, err = _main(capsys, *pairs, f"root={tmp_path}", "--dry-run")
            assert code == 0 and "would submit" in out, (argv, err)
        else:
            assert parser.parse_args(argv).func.__name__ == f"_{argv[0]}"


@pytest.mark.parametrize("recipe,config,method", [
    ("td3_mt", dict(total_steps=40, start_steps=20, eval_every=40, checkpoint_every=40, hidden=[16],
                    batch_size_per_task=8), "TD3-MT"),
    ("a2c_multitask", dict(total_steps=400, num_envs_per_task=2, eval_every=0), "Vanilla Multi-task"),
])
def test_eval_reproduces_the_runs_own_last_evaluation(recipe, config, method, tmp_path, capsys):
    """The policy rebuilt from the run (TD3: its checkpoint; A2C: its final model.pt) is the trained one: with the
    run's evaluation seed and episode count, `tdmt eval` gives exactly the returns the run logged at that step."""
    from tdmt.algos import get_recipe

    folder = tmp_path / recipe
    module = get_recipe(recipe)
    module.run(apply_overrides(module.Config(), dict(suite="pendulum-mt3", run_dir=str(folder), eval_episodes=2,
                                                     progress=False, **config)))
    code, _, err = _main(capsys, "eval", str(folder), "episodes=2")
    assert code == 0, err
    logged = CSVLog(folder / "eval.csv").rows()[-1]
    assert logged["step"] == str(config["total_steps"])
    for line in (folder / "evaluation.csv").read_text().splitlines()[1:]:
        task, mean, std, _ = line.split(",")
        assert (float(mean), float(std)) == (float(logged[f"eval/{task}/return"]),
                                             float(logged[f"eval/{task}/return_std"]))
    assert read_run(folder).method == method


def test_eval_of_teachers_and_ktm_and_their_report(tmp_path, capsys):
    """Teachers (their final per-task models) and KTM-DRL (its checkpoint) evaluate exactly as logged; `tdmt report`
    on the folder gives the ratio to the teachers and names the methods as the paper does."""
    from tdmt.algos import ktm_drl, teachers

    tiny = dict(suite="pendulum-mt3", hidden=[16, 16], batch_size_per_task=16, buffer_size_per_task=200,
                eval_episodes=1, progress=False)
    teachers.run(apply_overrides(teachers.Config(), dict(run_dir=str(tmp_path / "teachers"), total_steps=300,
                                                         start_steps=100, eval_every=150, checkpoint_every=0, **tiny)))
    ktm_drl.run(apply_overrides(ktm_drl.Config(), dict(
        run_dir=str(tmp_path / "ktm"), teachers_dir=str(tmp_path / "teachers" / "teachers"), offline_steps=40,
        online_steps=60, learning_starts=10, eval_every=20, checkpoint_every=50, **tiny)))
    for name in ("teachers", "ktm"):
        code, _, err = _main(capsys, "eval", str(tmp_path / name), "episodes=1")
        assert code == 0, err
        logged = CSVLog(tmp_path / name / "eval.csv").rows()[-1]
        evaluated = [line.split(",") for line in (tmp_path / name / "evaluation.csv").read_text().splitlines()[1:]]
        # the teachers' log comes from their native-size networks, the evaluation from the stacked padded ones
        assert [float(mean) for _, mean, *_ in evaluated] == pytest.approx(
            [float(logged[f"eval/{t}/return"]) for t, *_ in evaluated], rel=1e-6 if name == "ktm" else 1e-5)
    assert [(r.recipe, r.step, r.budget, r.status) for r in find_runs(tmp_path)] == [
        ("ktm_drl", 100, 100, "done"), ("train_teachers", 300, 300, "done")]
    code, _, err = _main(capsys, "report", str(tmp_path))
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| task | Ideal | KTM-DRL |" in report and "performance ratio to Ideal" in report
    ratio = CSVLog(tmp_path / "report" / "pendulum-mt3_ratio.csv").rows()
    assert [r["method"] for r in ratio] == ["KTM-DRL"]
    assert all(r[t] == "nan" for r in ratio for t in ("PendulumGravityLow", "average"))  # teachers' returns < 0

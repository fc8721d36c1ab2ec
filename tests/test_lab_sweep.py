"""`rlvr sweep`: grid expansion, bad specs refused before any cell, a real 2-cell sweep of the tiny model,
skipping completed cells, restarting interrupted and failed ones, and spec changes on an existing sweep."""

from __future__ import annotations

import _thread
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from tiny_run import TINY as TINY_RUN
from typer.testing import CliRunner

from rlvr_lab.cli import app
from rlvr_lab.config import load_config
from rlvr_lab.lab import sweep
from rlvr_lab.lab.sweep import SpecError, expand, load_spec, plan_sweep, run_sweep

# The sweep must override the base config's run name, seed and threads.
TINY = {**TINY_RUN, "run": {"name": "ignored", "seed": 99, "threads": 7}}

SPEC = {"name": "tiny_sweep", "base": "../configs/tiny.yaml", "seeds": [0, 1],
        "conditions": {"grpo": {"presets": ["grpo"]}}}
TWO_CONDITIONS = {"grpo": {"presets": ["grpo"]}, "dr_grpo": {"presets": ["dr_grpo"]}}

# Stands in for `rlvr train` where only the sweep's bookkeeping is under test: it writes the summary the
# trainer writes, fails with exit code 3 for the seed in FAKE_FAIL_SEED, and hangs with FAKE_HANG set.
FAKE_TRAIN = """
import json, os, sys, time, yaml
run = yaml.safe_load(open(sys.argv[1]))["run"]
run_dir = os.path.join(run["output_dir"], run["name"])
os.makedirs(run_dir)
print("fake train, seed", run["seed"], "threads", os.environ["OMP_NUM_THREADS"], flush=True)
if os.environ.get("FAKE_HANG"):
    open(os.path.join(run_dir, "pid"), "w").write(str(os.getpid()))
    time.sleep(120)
if str(run["seed"]) == os.environ.get("FAKE_FAIL_SEED"):
    print("boom: the fake trainer failed", flush=True)
    sys.exit(3)
json.dump({"status": "completed", "seed": run["seed"]}, open(os.path.join(run_dir, "summary.json"), "w"))
"""


def write_spec(root: Path, spec: dict | None = None, base: dict | None = None) -> Path:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "experiments").mkdir(exist_ok=True)
    (root / "configs" / "tiny.yaml").write_text(yaml.safe_dump(base or TINY, sort_keys=False))
    path = root / "experiments" / "spec.yaml"
    path.write_text(yaml.safe_dump(spec or SPEC, sort_keys=False))
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["sweep", *map(str, args)])


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def statuses(out: Path) -> dict[str, str]:
    return {f"{c['condition']}/seed{c['seed']}": c["status"] for c in read_manifest(out)["cells"]}


@pytest.fixture
def no_cell_may_start(monkeypatch):
    def refuse(job):
        raise AssertionError(f"cell {job.label} was started")

    monkeypatch.setattr(sweep, "start_cell", refuse)


@pytest.fixture
def started(monkeypatch) -> list[str]:
    """The labels of the cells started, in order (the cells still run)."""
    labels, real = [], sweep.start_cell

    def record(job):
        labels.append(job.label)
        return real(job)

    monkeypatch.setattr(sweep, "start_cell", record)
    return labels


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    monkeypatch.setattr(sweep, "cell_command", lambda config_file: [sys.executable, str(script), config_file])


# ---- expansion and validation --------------------------------------------------------------------


def test_grid_expansion_names_merge_order_and_seeds(tmp_path):
    base = {**TINY, "algorithm": {"kl": {"coef": 0.3}, "entropy_coef": 0.7}}
    spec_path = write_spec(tmp_path, {
        "name": "grid", "base": "../configs/tiny.yaml", "seeds": [3, 1], "baseline": "clip_cov",
        "overrides": ["train.minibatches=2", "algorithm.entropy_coef=0.5"],
        "conditions": {"grpo": {"presets": ["grpo"]},
                       "clip_cov": {"presets": ["clip_cov"],
                                    "overrides": ["train.minibatches=4", "algorithm.entropy_coef=0.9"]}},
        "grid": {"algorithm.entropy_coef": [0.0, 0.001], "train.epochs": [1, 2]},
    }, base=base)
    spec = load_spec(spec_path)
    names = [f"{group}+entropy_coef={e}+epochs={n}" for group in ("grpo", "clip_cov")
             for e in ("0.0", "0.001") for n in (1, 2)]
    assert [c.name for c in spec.conditions] == names
    assert spec.baseline == "clip_cov+entropy_coef=0.0+epochs=1"  # a grid's base name: its first values
    cells = expand(spec)
    assert [(c.seed, c.condition) for c in cells] == [(s, n) for s in (3, 1) for n in names]  # seed-major
    cell = next(c for c in cells if c.condition == "clip_cov+entropy_coef=0.001+epochs=2" and c.seed == 1)
    assert cell.presets == ("clip_cov",)
    assert cell.overrides == ("train.minibatches=2", "algorithm.entropy_coef=0.5", "train.minibatches=4",
                              "algorithm.entropy_coef=0.9", "algorithm.entropy_coef=0.001", "train.epochs=2")

    out = tmp_path / "sweeps" / "grid"
    plan = plan_sweep(spec, out, parallel=2, threads=4)
    cfg = plan.configs[cell]
    assert cfg.algorithm.kl.coef == 0.0                        # the preset over the base file
    assert cfg.train.minibatches == 4                          # the condition's overrides over the spec's
    assert cfg.algorithm.entropy_coef == 0.001                 # the grid over both
    assert cfg.train.epochs == 2 and cfg.model.tiny.hidden_size == 32
    assert cfg.algorithm.token_overrides[0].name == "clip_cov"
    assert (cfg.run.seed, cfg.run.name, cfg.run.overwrite, cfg.run.threads) == (1, "seed1", True, 2)
    assert Path(cfg.run.output_dir) == (out / "runs" / cell.condition).resolve()
    grpo = plan.configs[next(c for c in cells if c.condition == names[0])]
    assert (grpo.train.minibatches, grpo.algorithm.entropy_coef, grpo.algorithm.token_overrides) == (2, 0.0, [])
    manifest = sweep.manifest(plan)
    assert manifest["seeds"] == [3, 1] and list(manifest["conditions"]) == names
    assert manifest["conditions"][cell.condition] == {"presets": ["clip_cov"], "overrides": list(cell.overrides)}
    assert {c["status"] for c in manifest["cells"]} == {"pending"} and len(manifest["cells"]) == 16
    assert not out.exists()  # planning reads only


def test_dry_run_lists_the_cells_and_runs_none(tmp_path, monkeypatch, no_cell_may_start):
    spec = write_spec(tmp_path, {**SPEC, "conditions": TWO_CONDITIONS})
    monkeypatch.chdir(tmp_path)
    result = invoke(spec, "--dry-run")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "│" in line]
    assert len(rows) == 4 and all("run" in row for row in rows)
    assert sum("dr_grpo" in row for row in rows) == 2 and sum(" 1 " in row for row in rows) == 2
    assert not (tmp_path / "sweeps").exists()


BAD_SPECS = {
    "unknown preset": ({"conditions": {"grpo": {"presets": ["grpo"]}, "odd": {"presets": ["no_such_preset"]}}},
                       ["condition 'odd'", "unknown preset 'no_such_preset'"]),
    "unknown override key": ({"overrides": ["train.no_such_key=1"]}, ["seeds 0, 1", "no_such_key: unknown key"]),
    "unknown grid key": ({"grid": {"algorithm.entropy_cof": [0.0, 0.1]}}, ["entropy_cof: unknown key"]),
    "empty seed list": ({"seeds": []}, ["seeds must be a non-empty list"]),
    "duplicate seeds": ({"seeds": [0, 1, 0]}, ["seeds must be distinct", "repeats: [0]"]),
    "unknown baseline": ({"baseline": "dapo"}, ["baseline 'dapo' is not a condition"]),
    "bad value": ({"conditions": {"grpo": {"overrides": ["algorithm.policy_loss.params.clip_high=-0.1"]}}},
                  ["condition 'grpo', seeds 0, 1", "clip_high=-0.1 is not allowed", "must be float >= 0"]),
    "inert method": ({"conditions": {"kl_cov": {"presets": ["kl_cov"], "overrides": ["train.minibatches=1"]}}},
                     ["condition 'kl_cov'", "needs an off-policy step"]),
    "a setting the sweep owns": ({"overrides": ["run.seed=5"]}, ["run.seed", "which the sweep sets"]),
    "inputs single-turn rollouts lack": ({"conditions": {"llds_ma": {"presets": ["llds_ma"]}}},
                                         ["condition 'llds_ma'", "only tool-use (search) rollouts provide"]),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_a_bad_spec_fails_before_any_cell_runs(tmp_path, case, no_cell_may_start):
    change, expected = BAD_SPECS[case]
    spec = write_spec(tmp_path, {**SPEC, **change})
    out = tmp_path / "sweep"
    result = invoke(spec, "--out", out)
    assert result.exit_code == 2, result.output
    assert "sweep error" in result.output
    for text in expected:
        assert text in result.output, (text, result.output)
    assert not out.exists()


# ---- a real sweep --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    """grpo x seeds 0 and 1 of the tiny model, both cells at once with one thread each."""
    root = tmp_path_factory.mktemp("real")
    spec, out = write_spec(root), root / "sweep"
    t0 = time.monotonic()
    result = invoke(spec, "--out", out, "--parallel", 2, "--threads", 2)
    return spec, out, result, time.monotonic() - t0


def copy_sweep(real_sweep, tmp_path) -> tuple[Path, Path]:
    spec, out, result, _ = real_sweep
    assert result.exit_code == 0, result.output
    shutil.copytree(out, tmp_path / "sweep")
    return spec, tmp_path / "sweep"


def test_real_sweep_writes_run_dirs_manifest_and_logs(real_sweep):
    spec, out, result, seconds = real_sweep
    assert result.exit_code == 0, result.output
    assert "2/2 cells completed" in result.output
    assert (out / "spec.yaml").read_text() == spec.read_text()
    manifest = read_manifest(out)
    assert (manifest["name"], manifest["baseline"], manifest["seeds"]) == ("tiny_sweep", "grpo", [0, 1])
    assert manifest["conditions"] == {"grpo": {"presets": ["grpo"], "overrides": []}}
    cells = manifest["cells"]
    assert [(c["condition"], c["seed"], c["run_dir"], c["status"], c["error"]) for c in cells] == [
        ("grpo", 0, "runs/grpo/seed0", "completed", None), ("grpo", 1, "runs/grpo/seed1", "completed", None)]
    assert all(0 < c["seconds"] < seconds for c in cells)
    for seed in (0, 1):
        run_dir = out / "runs" / "grpo" / f"seed{seed}"
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
        assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                if json.loads(line).get("stage") == "rl"] == [1, 2]
        cfg = load_config(run_dir.with_name(f"seed{seed}.config.yaml"))  # what the cell trained from
        assert (cfg.run.seed, cfg.run.threads, cfg.train.steps) == (seed, 1, 2)
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["seed"] == seed
        log = run_dir.with_name(f"seed{seed}.log").read_text()
        assert log.startswith("$ OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ") and "-m rlvr_lab.cli train" in log
        assert "status: completed" in log and "step    2/2" in log
    assert not (out / "manifest.json.tmp").exists()


def test_rerun_skips_completed_cells(real_sweep, tmp_path, no_cell_may_start):
    spec, out = copy_sweep(real_sweep, tmp_path)
    before = read_manifest(out)
    result = invoke(spec, "--out", out)
    assert result.exit_code == 0, result.output
    assert "2 already completed, 0 to run" in result.output
    assert read_manifest(out) == before  # the same seconds: nothing ran


def test_killed_cell_is_restarted_and_only_it(real_sweep, tmp_path, started):
    """A killed trainer leaves a run directory without a completed summary.json (and a manifest saying
    'running'); the rerun deletes that directory, runs only that cell and completes it."""
    spec, out = copy_sweep(real_sweep, tmp_path)
    killed = out / "runs" / "grpo" / "seed1"
    (killed / "summary.json").unlink()
    (killed / "left_by_the_killed_run").write_text("")
    manifest = read_manifest(out)
    manifest["cells"][1].update(status="running", seconds=None)
    (out / "manifest.json").write_text(json.dumps(manifest))
    kept = (out / "runs" / "grpo" / "seed0" / "summary.json").stat().st_mtime_ns

    result = invoke(spec, "--out", out)
    assert result.exit_code == 0, result.output
    assert started == ["grpo/seed1"]
    assert "1 to run (1 restarted)" in result.output
    assert json.loads((killed / "summary.json").read_text())["status"] == "completed"
    assert not (killed / "left_by_the_killed_run").exists()
    assert (out / "runs" / "grpo" / "seed0" / "summary.json").stat().st_mtime_ns == kept
    after = read_manifest(out)["cells"]
    assert [c["status"] for c in after] == ["completed", "completed"]
    assert after[0]["seconds"] == manifest["cells"][0]["seconds"] and after[1]["seconds"] > 0


@pytest.mark.slow
def test_cell_with_a_periodic_checkpoint_is_resumed_not_restarted(tmp_path):
    """With ``train.checkpoint_every`` set, an interrupted cell continues from its last checkpoint (``rlvr train
    --resume``) and ends with the same records as the run that was never interrupted."""
    spec = write_spec(tmp_path, {**SPEC, "seeds": [0], "overrides": ["train.checkpoint_every=1", "train.steps=3"]})
    out = tmp_path / "sweep"
    assert invoke(spec, "--out", out, "--threads", 1).exit_code == 0
    cell = out / "runs" / "grpo" / "seed0"
    whole = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    # as a kill during step 3 leaves it: no summary, no step-3 checkpoint, step 3's record half written
    (cell / "summary.json").unlink()
    shutil.rmtree(cell / "checkpoints" / "step-3")
    shutil.rmtree(cell / "checkpoints" / "final")
    lines = (cell / "metrics.jsonl").read_text().splitlines()
    (cell / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])

    result = invoke(spec, "--out", out, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "--resume" in (out / "runs" / "grpo" / "seed0.log").read_text()
    again = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    drop = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert drop(again) == drop(whole)
    assert json.loads((cell / "summary.json").read_text())["resumed"][0]["from_step"] == 2


# ---- the sweep's bookkeeping, with a stand-in trainer --------------------------------------------


def test_failed_cell_is_marked_the_others_run_and_the_exit_code_says_so(tmp_path, monkeypatch, fake_trainer):
    monkeypatch.setenv("FAKE_FAIL_SEED", "0")
    spec, out = write_spec(tmp_path), tmp_path / "sweep"
    result = invoke(spec, "--out", out, "--threads", 3)
    assert result.exit_code == 1, result.output
    assert "failed grpo/seed0" in result.output and "1 failed" in result.output
    cells = read_manifest(out)["cells"]
    assert [c["status"] for c in cells] == ["failed", "completed"]
    assert "exit code 3" in cells[0]["error"] and "boom: the fake trainer failed" in cells[0]["error"]
    assert "threads 3" in (out / "runs" / "grpo" / "seed1.log").read_text()

    monkeypatch.delenv("FAKE_FAIL_SEED")  # a rerun restarts the failed cell only
    result = invoke(spec, "--out", out)
    assert result.exit_code == 0, result.output
    assert "1 to run (1 restarted)" in result.output
    assert [c["status"] for c in read_manifest(out)["cells"]] == ["completed", "completed"]


def test_interrupt_stops_running_cells_and_leaves_them_restartable(tmp_path, monkeypatch, fake_trainer):
    monkeypatch.setenv("FAKE_HANG", "1")
    # interrupt_main() does nothing while SIGINT is ignored, as it is for a suite started in the background
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    spec, out = load_spec(write_spec(tmp_path)), tmp_path / "sweep"
    pid_files = [out / "runs" / "grpo" / f"seed{s}" / "pid" for s in (0, 1)]

    def interrupt_when_both_run():
        deadline = time.monotonic() + 30
        while not all(p.exists() and p.read_text() for p in pid_files) and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()  # what Ctrl-C does

    threading.Thread(target=interrupt_when_both_run, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(spec, out, parallel=2, threads=2)
    finally:
        signal.signal(signal.SIGINT, previous)
    for pid_file in pid_files:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
    cells = read_manifest(out)["cells"]
    assert [c["status"] for c in cells] == ["pending", "pending"]
    assert all("interrupted" in c["error"] for c in cells)

    monkeypatch.delenv("FAKE_HANG")
    plan = run_sweep(spec, out, parallel=2, threads=2)
    assert plan.restart == set(plan.cells)
    assert [c["status"] for c in read_manifest(out)["cells"]] == ["completed", "completed"]
    assert not any(p.exists() for p in pid_files)  # restarted from scratch


def test_a_changed_spec_is_refused_and_added_seeds_and_conditions_run_alone(tmp_path, fake_trainer, started):
    spec, out = write_spec(tmp_path, {**SPEC, "seeds": [0]}), tmp_path / "sweep"
    assert invoke(spec, "--out", out).exit_code == 0
    assert started == ["grpo/seed0"]

    for change, named in [({"conditions": {"grpo": {"presets": ["grpo"], "overrides": ["train.steps=3"]}}},
                           "condition 'grpo': overrides [] -> ['train.steps=3']"),
                          ({"conditions": {"gspo": {"presets": ["gspo"]}}}, "condition 'grpo' is not in the new spec"),
                          ({"overrides": ["train.steps=3"]}, "overrides: [] -> ['train.steps=3']"),
                          ({"seeds": [1]}, "seeds [0] are not in the new spec"),
                          ({"base": "grpo"}, "base: '../configs/tiny.yaml' -> 'grpo'")]:
        write_spec(tmp_path, {**SPEC, "seeds": [0], **change})
        result = invoke(spec, "--out", out)
        assert result.exit_code == 2, result.output
        assert named in result.output and "different spec" in result.output
    assert started == ["grpo/seed0"]

    grown = {**SPEC, "seeds": [0, 2], "conditions": TWO_CONDITIONS}
    write_spec(tmp_path, grown)
    result = invoke(spec, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(started[1:]) == ["dr_grpo/seed0", "dr_grpo/seed2", "grpo/seed2"]
    assert statuses(out) == {f"{c}/seed{s}": "completed" for s in (0, 2) for c in ("grpo", "dr_grpo")}
    assert yaml.safe_load((out / "spec.yaml").read_text())["seeds"] == [0, 2]


def test_only_runs_the_named_conditions(tmp_path, fake_trainer, started):
    spec = write_spec(tmp_path, {**SPEC, "seeds": [0], "conditions": TWO_CONDITIONS, "grid": {"train.epochs": [1, 2]}})
    out = tmp_path / "sweep"
    result = invoke(spec, "--out", out, "--only", "dr_grpo")
    assert result.exit_code == 0, result.output
    assert sorted(started) == ["dr_grpo+epochs=1/seed0", "dr_grpo+epochs=2/seed0"]
    assert statuses(out) == {"grpo+epochs=1/seed0": "pending", "grpo+epochs=2/seed0": "pending",
                             "dr_grpo+epochs=1/seed0": "completed", "dr_grpo+epochs=2/seed0": "completed"}
    assert invoke(spec, "--out", out, "--only", "ppo").exit_code == 2


def test_the_ray_backend_names_its_extra_when_ray_is_missing(tmp_path, monkeypatch, no_cell_may_start):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SpecError, match=r"pip install 'rlvr-lab\[ray\]'"):
        run_sweep(load_spec(write_spec(tmp_path)), tmp_path / "sweep", backend="ray")
    assert not (tmp_path / "sweep").exists()

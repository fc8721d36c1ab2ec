"""`rlvr sweep --backend ray`: a 2-cell sweep of the tiny model as Ray tasks on a local Ray instance."""

from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("ray")

from tiny_run import TINY  # noqa: E402

from rlvr_lab.lab import sweep  # noqa: E402
from rlvr_lab.lab.sweep import load_spec, run_sweep  # noqa: E402


@pytest.mark.slow
def test_ray_backend_runs_a_two_cell_sweep_and_a_rerun_skips_it(tmp_path, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "ray_sweep", "base": "tiny.yaml", "seeds": [0, 1],
                                         "conditions": {"grpo": {"presets": ["grpo"]}}}))
    out = tmp_path / "sweep"

    def refuse(*args, **kwargs):
        raise AssertionError("a cell was started outside Ray")

    monkeypatch.setattr(sweep.LocalBackend, "submit", refuse)
    plan = run_sweep(load_spec(spec_path), out, parallel=2, threads=2, backend="ray")

    manifest = json.loads((out / "manifest.json").read_text())
    assert [(c["condition"], c["seed"], c["status"], c["error"]) for c in manifest["cells"]] == [
        ("grpo", 0, "completed", None), ("grpo", 1, "completed", None)], manifest["cells"]
    assert plan.threads == 1 and all(c["seconds"] > 0 for c in manifest["cells"])
    for seed in (0, 1):
        run_dir = out / "runs" / "grpo" / f"seed{seed}"
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
        log = run_dir.with_name(f"seed{seed}.log").read_text()
        assert log.startswith("$ OMP_NUM_THREADS=1 ") and "status: completed" in log

    import ray

    assert not ray.is_initialized()  # the sweep shut down the instance it started

    rerun = run_sweep(load_spec(spec_path), out, parallel=2, threads=2, backend="ray")
    assert rerun.todo == [] and json.loads((out / "manifest.json").read_text()) == manifest

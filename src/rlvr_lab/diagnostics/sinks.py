"""Where the metrics go: ``metrics.jsonl`` always, TensorBoard by default, W&B and MLflow when asked.

Every record is a flat dict with ``stage`` (``sft``/``rl``/``eval``), ``step`` and namespaced values.
The JSONL file is the record of the run (the report reads it) and is flushed line by line, so a crash
loses nothing. The other sinks are mirrors: their libraries are imported only when enabled, a missing
library is a start-up error that says what to install, and a sink that fails mid-run is switched off
with one warning instead of taking the run down.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Protocol

from rlvr_lab.faults import armed, kill_now

Record = dict[str, Any]


class MetricSink(Protocol):
    name: str

    def write(self, record: Record) -> None: ...

    def close(self) -> None: ...


def scalars(record: Record) -> dict[str, float]:
    """The finite numeric values of a record, without its ``step`` (strings such as labels are dropped)."""
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def truncate_jsonl(path: Path, keep_lines: int) -> tuple[int, bool]:
    """Cut the JSONL file at ``path`` to its first ``keep_lines`` lines (a resumed run rewrites what came
    after its checkpoint). Returns (complete lines dropped, whether an unterminated last line was dropped).
    Raises ValueError when the file holds fewer complete lines than ``keep_lines``."""
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # ``tail`` is b"" when the file ends with a newline
    if len(complete) < keep_lines:
        raise ValueError(f"{path} holds {len(complete)} complete lines, fewer than the {keep_lines} its checkpoint "
                         "recorded: the file was changed or truncated by something other than this run")
    path.write_bytes(b"".join(line + b"\n" for line in complete[:keep_lines]))
    return len(complete) - keep_lines, bool(tail)


class JsonlSink:
    """Appends one JSON object per line to ``metrics.jsonl`` and flushes it at once; ``lines`` counts the
    complete lines the file holds (a checkpoint records it, so that a resumed run continues exactly there)."""

    name = "jsonl"

    def __init__(self, path: Path):
        self.path = path
        self.lines = path.read_bytes().count(b"\n") if path.exists() else 0
        self._fh = path.open("a", encoding="utf-8")

    def write(self, record: Record) -> None:
        line = json.dumps(record, default=float) + "\n"
        if record.get("stage") == "rl" and armed("metrics_write", int(record.get("step", -1))):
            self._fh.write(line[: len(line) // 2])  # a torn line, as a kill mid-write leaves it
            self._fh.flush()
            kill_now()
        self._fh.write(line)
        self._fh.flush()
        self.lines += 1

    def close(self) -> None:
        self._fh.close()


class TensorBoardSink:
    """Scalars as TensorBoard events under ``log_dir`` (``tensorboard --logdir RUN_DIR/tensorboard``)."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        """``purge_step``: a resumed run's first step; TensorBoard drops the events the run wrote from that
        step on before it was stopped, so the curves continue without a duplicated stretch."""
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, record: Record) -> None:
        step = int(record.get("step", 0))
        for key, value in scalars(record).items():
            self._writer.add_scalar(key, value, global_step=step)
        if record.get("stage") != "sft":  # warm-start steps are many and cheap; flush RL and eval records
            self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """A Weights & Biases run; ``mode="offline"`` writes under ``dir`` and needs no account or network
    (upload later with ``wandb sync``)."""

    name = "wandb"

    def __init__(self, *, project: str, mode: str, dir: Path, name: str, entity: str | None, config: Record):
        import wandb

        dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, entity=entity, mode=mode, dir=str(dir), name=name, config=config,
                               reinit="create_new")
        self._defined: set[str] = set()

    def write(self, record: Record) -> None:
        # warm-start and RL steps both count from the start: each stage gets its own x axis
        stage_step = "sft_step" if record.get("stage") == "sft" else "rl_step"
        values = scalars(record)
        for key in values.keys() - self._defined:
            self._run.define_metric(key, step_metric=stage_step)
            self._defined.add(key)
        self._run.log({**values, stage_step: int(record.get("step", 0))})

    def close(self) -> None:
        self._run.finish()


# MLflow metric names allow letters, digits and _ - . / and spaces only (`eval/pass@1` is refused).
_MLFLOW_BAD = re.compile(r"[^0-9A-Za-z_\-./ ]")


def mlflow_key(key: str) -> str:
    return _MLFLOW_BAD.sub(lambda m: "_at_" if m.group() == "@" else "_", key)


class MlflowSink:
    """An MLflow run; the default tracking URI is a local file store in the run directory, so it works
    offline (``mlflow ui --backend-store-uri RUN_DIR/mlruns``)."""

    name = "mlflow"

    def __init__(self, *, tracking_uri: str, experiment: str, run_name: str, params: dict[str, str]):
        import mlflow

        if tracking_uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode behind this switch; a local file store is
            # still the only backend that needs no database packages, so offline runs use it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
        self._run = mlflow.start_run(run_name=run_name)
        mlflow.log_params(params)

    def write(self, record: Record) -> None:
        values = {mlflow_key(k): v for k, v in scalars(record).items()}
        if values:
            self._mlflow.log_metrics(values, step=int(record.get("step", 0)))

    def close(self) -> None:
        self._mlflow.end_run()


class Sinks:
    """Fans each record out to every sink. The first sink is the run's record and its errors propagate;
    a mirror that raises is closed and dropped with one warning."""

    def __init__(self, sinks: list[MetricSink]):
        if not sinks:
            raise ValueError("at least one metric sink is needed")
        self.sinks = list(sinks)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sinks]

    def write(self, record: Record) -> None:
        self.sinks[0].write(record)
        for sink in list(self.sinks[1:]):
            try:
                sink.write(record)
            except Exception as exc:  # a mirror must never take the run down
                self._drop(sink, exc)

    def _drop(self, sink: MetricSink, exc: Exception) -> None:
        warnings.warn(f"metric sink {sink.name!r} failed and is switched off: {type(exc).__name__}: {exc}", stacklevel=3)
        self.sinks.remove(sink)
        try:
            sink.close()
        except Exception:
            pass

    def close(self) -> None:
        for sink in self.sinks[1:]:
            try:
                sink.close()
            except Exception as exc:
                warnings.warn(f"metric sink {sink.name!r} failed to close: {exc}", stacklevel=2)
        self.sinks[0].close()


def require(module: str, extra: str) -> None:
    """Start-up check for an optional sink library, with the install command in the message."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise RuntimeError(
            f"the {module!r} metric sink is enabled but {module} is not installed; "
            f"`pip install 'rlvr-lab[{extra}]'` or turn it off in the `observe` config"
        )

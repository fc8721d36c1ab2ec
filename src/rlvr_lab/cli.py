"""The ``rlvr`` command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rlvr_lab.config import ConfigError, dump_config, load_config
from rlvr_lab.diagnostics import ALERT_LABELS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Reinforcement learning with verifiable rewards.")
console = Console()


class ConsoleReporter:
    """Progress bars and one readable line per step, driven by the trainer's events."""

    def __init__(self, console: Console, show_samples: bool = True):
        self.console = console
        self.show_samples = show_samples
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True,
        )
        self.tasks: dict[str, Any] = {}

    def _bar(self, name: str, total: int):
        if name not in self.tasks:
            if not self.progress.live.is_started:
                self.progress.start()
            self.tasks[name] = self.progress.add_task(name, total=total)
        return self.tasks[name]

    def __call__(self, kind: str, **kw: Any) -> None:
        getattr(self, f"on_{kind}", lambda **_: None)(**kw)

    def on_setup(self, summary, config) -> None:
        self.console.print(
            f"[bold]rlvr train[/] run dir [cyan]{summary['run_dir']}[/] | model {summary['model']} "
            f"({summary['params'] / 1e6:.2f}M params, {summary['rollout_backend']} sampler) | task {summary['task']} | "
            f"training questions dropped as duplicates of held-out ones: {summary['train_questions_dropped_as_eval_duplicates']}"
        )

    def on_warning(self, message) -> None:
        self.console.print(f"[bold yellow]warning[/]: {message}")

    def on_sft_step(self, step, total, record) -> None:
        self.progress.update(self._bar("warm-start", total), completed=step + 1)
        if (step + 1) % max(1, total // 10) == 0 or step + 1 == total:
            self.console.print(f"sft {step + 1:>4}/{total} | loss {record['sft/loss']:.4f} | lr {record['sft/lr']:.2e}")

    def on_eval_start(self, label) -> None:
        self.console.print(f"[dim]evaluating ({label})...[/]")

    def on_eval(self, label, result) -> None:
        parts = [f"{k.split('/', 1)[1]} {v:.3f} ± {result.get(k + '_se', 0):.3f}"
                 for k, v in result.items() if k.startswith("eval/") and ("acc" in k or "pass@" in k) and not k.endswith("_se")]
        self.console.print(f"[bold green]eval {label}[/] (n={int(result['eval/n_prompts'])} prompts, "
                           f"{int(result['eval/samples'])} samples each): " + " | ".join(parts))

    def on_rl_step(self, step, total, record, samples) -> None:
        self.progress.update(self._bar("rl", total), completed=step)
        g = record.get
        self.console.print(
            f"step {step:>4}/{total} | reward {g('reward/mean', 0):.3f} | acc {g('reward/accuracy', 0):.3f} | "
            f"entropy {g('policy/entropy', float('nan')):.3f} | len {g('rollout/response_len_mean', 0):.1f} | "
            f"kl {g('grpo/ppo_kl', 0):+.4f} | "
            + (f"searches {g('search/valid_searches_mean'):.2f} | " if "search/valid_searches_mean" in record else "")
            + f"{g('time/step_s', 0):.2f}s"
            + (f" | [yellow]{record['phase/label']}[/]" if record.get("phase/label") in ALERT_LABELS + ("stagnation",) else "")
        )
        if self.show_samples and samples and step in (1, total):
            self.console.print(f"[dim]  sample: {samples[0][:120]!r}[/]")

    def on_done(self, summary) -> None:
        if self.progress.live.is_started:
            self.progress.stop()
        evals = summary.get("eval", {})
        if "before_rl" in evals and "after_rl" in evals:
            table = Table(title="held-out accuracy (mean ± standard error over prompts)")
            table.add_column("metric")
            table.add_column("after warm-start")
            table.add_column("after RL")
            table.add_column("change")
            before, after = evals["before_rl"], evals["after_rl"]
            for key in before:
                if key.endswith("_se") or not ("acc" in key or "pass@" in key):
                    continue
                table.add_row(key.split("/", 1)[1], f"{before[key]:.3f} ± {before.get(key + '_se', 0):.3f}",
                              f"{after[key]:.3f} ± {after.get(key + '_se', 0):.3f}", f"{after[key] - before[key]:+.3f}")
            self.console.print(table)
            self.console.print(f"n = {int(before['eval/n_prompts'])} held-out prompts, {int(before['eval/samples'])} samples each")
        self.console.print(f"status: {summary.get('status')} | run dir: {summary.get('run_dir')}")
        if "final_checkpoint" in summary:
            self.console.print(f"final checkpoint (Hugging Face format): {summary['final_checkpoint']}")
        if "report" in summary:
            self.console.print(f"report (open in a browser): [bold cyan]{summary['report']}[/]")
        for alert in summary.get("phase_alerts", []):
            self.console.print(f"[yellow]phase alert[/] at step {alert['step']}: {', '.join(alert['entered'])}")


def _load(config: Optional[Path], preset: list[Path], overrides: list[str]):
    try:
        return load_config(config, presets=list(preset), overrides=list(overrides))
    except ConfigError as exc:
        console.print(f"[bold red]config error[/]\n{exc}")
        raise typer.Exit(2) from None


@app.command()
def train(
    config: Path = typer.Argument(..., help="Run config YAML (see configs/)."),
    overrides: list[str] = typer.Argument(None, help="key.path=value overrides, e.g. train.steps=10"),
    preset: list[Path] = typer.Option([], "--preset", "-p", help="YAML merged over the config (e.g. configs/dapo.yaml)."),
    quiet: bool = typer.Option(False, help="No per-step lines."),
) -> None:
    """Supervised warm-start (optional), then RL; writes metrics, checkpoints and a summary to the run dir."""
    from rlvr_lab.train.loop import Trainer

    cfg = _load(config, preset, overrides or [])
    if cfg.run.threads is None and os.environ.get("OMP_NUM_THREADS"):
        cfg.run.threads = int(os.environ["OMP_NUM_THREADS"])
    reporter = None if quiet else ConsoleReporter(console)
    trainer = Trainer(cfg, reporter=reporter)
    try:
        trainer.setup()
    except (ValueError, FileNotFoundError) as exc:  # bad model source, task name or task options
        console.print(f"[bold red]setup error[/]: {exc}")
        raise typer.Exit(2) from None
    trainer.run()


@app.command("show-config")
def show_config(
    config: Optional[Path] = typer.Argument(None, help="Run config YAML (defaults if omitted)."),
    overrides: list[str] = typer.Argument(None, help="key.path=value overrides."),
    preset: list[Path] = typer.Option([], "--preset", "-p", help="YAML merged over the config."),
) -> None:
    """Print the fully resolved, validated config."""
    console.print(dump_config(_load(config, preset, overrides or [])), markup=False)


@app.command("list")
def list_components() -> None:
    """List the registered objectives and the available reasoning-gym tasks."""
    from rlvr_lab.objectives import ADVANTAGE_ESTIMATORS, AGGREGATORS, AUX_LOSSES, POLICY_LOSSES, TOKEN_ADVANTAGE_MODIFIERS
    from rlvr_lab.rewards import reasoning_gym_task_names

    for reg in (ADVANTAGE_ESTIMATORS, TOKEN_ADVANTAGE_MODIFIERS, POLICY_LOSSES, AUX_LOSSES, AGGREGATORS):
        console.print(f"[bold]{reg.kind}s[/]: {', '.join(reg.names()) or '(none yet)'}")
    names = reasoning_gym_task_names()
    console.print(f"[bold]reasoning-gym tasks ({len(names)})[/]: {', '.join(names)}")


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories written by `rlvr train` (each with a metrics.jsonl); several are overlaid, one colour per run."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default: report.html in the first run directory)."),
    title: Optional[str] = typer.Option(None, help="Page title (default: the run names)."),
) -> None:
    """Write one self-contained interactive HTML report (summary table, phase timeline, per-step plots) of the runs."""
    from rich.markup import escape

    from rlvr_lab.diagnostics.report import write_report
    from rlvr_lab.diagnostics.runlog import RunDirError

    try:
        path = write_report(run_dirs, out=out, title=title)
    except RunDirError as exc:
        console.print(f"[bold red]report error[/]: {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"report of {len(run_dirs)} run(s) (open in a browser; works offline): [bold cyan]{escape(str(path))}[/]")


if __name__ == "__main__":
    app()

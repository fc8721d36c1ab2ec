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
from rlvr_lab.threads import set_threads

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Reinforcement learning with verifiable rewards.")
console = Console()


def progress_bars(console: Console) -> Progress:
    """Bars with a description, done/total, elapsed time and an estimate of the time left; gone when done."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True)


class ConsoleReporter:
    """Progress bars and one readable line per step, driven by the trainer's events.

    A step line is printed without wrapping (``soft_wrap``): piped to a file, where rich assumes 80
    columns, each RL step stays one line whatever its length, so the log can be read with grep or tail.
    Text from elsewhere (samples, warnings) is never read as rich markup, so brackets in it print as typed.
    """

    def __init__(self, console: Console, show_samples: bool = True):
        self.console = console
        self.show_samples = show_samples
        self.progress = progress_bars(console)
        self.tasks: dict[str, Any] = {}

    @staticmethod
    def _eval_metrics(result: dict[str, Any]) -> list[str]:
        """The accuracy and pass@k keys of an eval result, without their standard errors and per-prompt values."""
        return [k for k, v in result.items() if k.startswith("eval/") and ("acc" in k or "pass@" in k)
                and not k.endswith("_se") and isinstance(v, (int, float))]

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
        from rich.markup import escape

        self.console.print(f"[bold yellow]warning[/]: {escape(str(message))}")

    def on_info(self, message) -> None:
        from rich.markup import escape

        self.console.print(escape(str(message)), highlight=False)

    def on_sft_step(self, step, total, record) -> None:
        self.progress.update(self._bar("warm-start", total), completed=step + 1)
        if (step + 1) % max(1, total // 10) == 0 or step + 1 == total:
            self.console.print(f"sft {step + 1:>4}/{total} | loss {record['sft/loss']:.4f} | lr {record['sft/lr']:.2e}")

    def on_eval_start(self, label) -> None:
        self.console.print(f"[dim]evaluating ({label})...[/]")

    def on_eval(self, label, result) -> None:
        parts = [f"{k.split('/', 1)[1]} {result[k]:.3f} ± {result.get(k + '_se', 0):.3f}"
                 for k in self._eval_metrics(result)]
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
            + (f" | [yellow]{record['phase/label']}[/]" if record.get("phase/label") in ALERT_LABELS + ("stagnation",) else ""),
            soft_wrap=True,
        )
        if self.show_samples and samples and step in (1, total):
            self.console.print(f"  sample: {samples[0][:120]!r}", style="dim", markup=False, soft_wrap=True)

    def on_done(self, summary) -> None:
        if self.progress.live.is_started:
            self.progress.stop()
        evals = summary.get("eval", {})
        if "before_rl" in evals and "after_rl" in evals:
            from rlvr_lab.eval.evaluate import PER_PROMPT
            from rlvr_lab.train.loop import accuracy_gain

            before, after = evals["before_rl"], evals["after_rl"]
            paired = PER_PROMPT in before and PER_PROMPT in after
            table = Table(title="held-out accuracy (mean ± standard error over prompts)",
                          caption="change ± standard error of the per-prompt differences (paired)"
                          if paired else "change ± sqrt(se_before² + se_after²) (unpaired)")
            table.add_column("metric")
            table.add_column("after warm-start")
            table.add_column("after RL")
            table.add_column("change")
            for key in self._eval_metrics(before):
                if key not in after:
                    continue
                change, change_se = accuracy_gain(summary, key)
                table.add_row(key.split("/", 1)[1], f"{before[key]:.3f} ± {before.get(key + '_se', 0):.3f}",
                              f"{after[key]:.3f} ± {after.get(key + '_se', 0):.3f}",
                              f"{change:+.3f} ± {change_se:.3f}")
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


PRESET_HELP = "A packaged preset by name (e.g. dapo; see `rlvr list`) or a YAML file, merged over the config."


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="Run config YAML (see configs/); with --resume, default: the run's own."),
    overrides: list[str] = typer.Argument(None, help="key.path=value overrides, e.g. train.steps=10"),
    preset: list[Path] = typer.Option([], "--preset", "-p", help=PRESET_HELP),
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue this run directory from its last periodic checkpoint (train.checkpoint_every), "
        "bitwise as if never stopped; only the step budget and output options may change."),
    quiet: bool = typer.Option(False, help="No per-step lines."),
) -> None:
    """Supervised warm-start (optional), then RL; writes metrics, checkpoints and a summary to the run dir."""
    from rlvr_lab.train.loop import Trainer

    overrides = list(overrides or [])
    if config is not None and "=" in config.name and not config.exists():  # `--resume DIR key=value`: no config
        overrides, config = [str(config), *overrides], None
    if config is None:
        if resume is None:
            console.print("[bold red]config error[/]: give a run config YAML (or --resume RUN_DIR)")
            raise typer.Exit(2)
        config = resume / "config.yaml"
        if not config.is_file():
            console.print(f"[bold red]setup error[/]: {resume} is not a run directory: it holds no config.yaml")
            raise typer.Exit(2)
    cfg = _load(config, preset, overrides)
    if cfg.run.threads is None and os.environ.get("OMP_NUM_THREADS"):
        cfg.run.threads = int(os.environ["OMP_NUM_THREADS"])
    if resume is not None:
        from rlvr_lab.train.resume import completed_steps

        done = completed_steps(resume)
        if done is not None and done >= cfg.train.steps:  # e.g. killed after its summary was written
            console.print(f"{resume} already completed {done} RL steps (train.steps={cfg.train.steps}): nothing to "
                          "resume; raise train.steps to continue it")
            raise typer.Exit(0)
    reporter = None if quiet else ConsoleReporter(console)
    trainer = Trainer(cfg, reporter=reporter, resume_dir=resume)
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
    preset: list[Path] = typer.Option([], "--preset", "-p", help=PRESET_HELP),
) -> None:
    """Print the fully resolved, validated config."""
    console.print(dump_config(_load(config, preset, overrides or [])), markup=False)


def describe_entry(entry) -> list[str]:
    """Lines describing one registered method: paper, parameters with defaults and allowed values, needs."""
    lines = [f"  {entry.name}: {entry.summary}" + (f" ({entry.paper})" if entry.paper else "")]
    defaults = entry.defaults()
    for key, spec in entry.params.items():
        lines.append(f"      {key} = {defaults[key]!r}  [{spec.allowed()}]" + (f"  {spec.help}" if spec.help else ""))
    if entry.needs:
        lines.append(f"      needs from the trainer: {', '.join(entry.needs)}")
    if entry.off_policy is not None:
        lines.append("      needs an off-policy step (train.minibatches >= 2 or train.epochs >= 2)"
                     + (f": without one {entry.off_policy}" if isinstance(entry.off_policy, str) else " for some settings"))
    if entry.drops_rows:
        lines.append("      removes responses from the batch (sample filter)")
    if entry.acts_on is not None:
        lines.append(f"      acts only on {entry.acts_on[1]} (counted by {entry.acts_on[0]})")
    return lines


@app.command("list")
def list_components(
    tasks: bool = typer.Option(True, help="Also list the reasoning-gym tasks."),
) -> None:
    """List every method with its paper, parameters (defaults and allowed values) and needs, the presets,
    the aggregation modes and the reasoning-gym tasks."""
    from rlvr_lab.objectives import AGGREGATORS
    from rlvr_lab.objectives.registry import all_registries
    from rlvr_lab.presets import preset_names, preset_summary
    from rlvr_lab.rewards import reasoning_gym_task_names

    for reg in all_registries():
        console.print(f"[bold]{reg.kind}s[/] ({len(reg.names())})")
        for name in reg.names():
            console.print("\n".join(describe_entry(reg.entry(name))), markup=False, highlight=False, soft_wrap=True)
    console.print(f"[bold]aggregation modes[/]: {', '.join(AGGREGATORS.names())}")
    console.print("[bold]presets[/] (rlvr train CONFIG --preset NAME)")
    for name in preset_names():
        console.print(f"  {name}: {preset_summary(name)}", markup=False, highlight=False, soft_wrap=True)
    if not tasks:
        return
    names = reasoning_gym_task_names()
    console.print(f"[bold]reasoning-gym tasks ({len(names)})[/]: {', '.join(names)}")


@app.command("sweep")
def sweep(
    spec: Path = typer.Argument(..., help="Sweep spec YAML: a base config, conditions (presets, overrides, a grid) and seeds."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Sweep directory (default: sweeps/<name>); rerun it to resume."),
    parallel: int = typer.Option(1, "--parallel", "-j", min=1, help="Cells run at once; each gets threads // parallel CPU threads."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads shared by the running cells (default: this machine's CPUs)."),
    backend: str = typer.Option("local", "--backend", help="local (subprocesses here) or ray (Ray tasks; needs rlvr-lab\\[ray] and a shared filesystem)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Address of a running Ray cluster (default: start a local Ray instance)."),
    only: list[str] = typer.Option([], "--only", help="Run only this condition (repeatable; a grid's base name selects all its values)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check every cell's config and list the cells; run nothing."),
) -> None:
    """Run a grid of configs x seeds, one `rlvr train` process per cell; completed cells are skipped on a rerun."""
    from rich.markup import escape

    from rlvr_lab.lab.sweep import SpecError, SweepProgress, load_spec, plan_sweep, run_sweep

    try:
        sweep_spec = load_spec(spec)
        if dry_run:
            plan = plan_sweep(sweep_spec, out, parallel=parallel, threads=threads, only=only)
        else:
            plan = run_sweep(sweep_spec, out, parallel=parallel, threads=threads, backend=backend,
                             ray_address=ray_address, only=only, reporter=SweepProgress(console))
    except SpecError as exc:
        console.print(f"[bold red]sweep error[/]\n{escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: the running cells were stopped; rerun the same command to restart them")
        raise typer.Exit(130) from None
    if dry_run:
        console.print(f"{escape(sweep_spec.name)}: {len(plan.cells)} cells in {escape(str(plan.out))}/runs/<condition>/seed<seed> "
                      f"({plan.parallel} at a time, {plan.threads} thread(s) each)", soft_wrap=True, highlight=False)
        table = Table()
        for column in ("condition", "seed", "action"):
            table.add_column(column)
        for job, state in plan.warm_states.items():
            action = "run" if job in plan.warm_todo else "skip (completed)" if state.status == "completed" else "not needed"
            table.add_row(f"(shared warm-start {job.key})", str(job.seed), action)
        for cell in plan.cells:
            action = ("restart (incomplete)" if cell in plan.restart else "run" if cell in plan.todo
                      else "skip (completed)" if plan.states[cell].status == "completed" else "not selected")
            table.add_row(escape(cell.condition), str(cell.seed), action)
        console.print(table)
        return
    failed, done = plan.failed, sum(state.status == "completed" for state in plan.states.values())
    console.print(f"{done}/{len(plan.cells)} cells completed | manifest: {escape(str(plan.out / 'manifest.json'))}",
                  soft_wrap=True)
    if failed:
        console.print(f"[bold red]{len(failed)} failed[/]: {escape(', '.join(c.label for c in failed))} "
                      "(their logs are next to their run directories; rerun to restart them)", soft_wrap=True)
        raise typer.Exit(1)


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


@app.command()
def compare(
    sweep_dir: Path = typer.Argument(..., help="Sweep directory written by `rlvr sweep` (with a manifest.json)."),
    run_dirs: list[Path] = typer.Argument(None, help="Single run directories to add, each as a condition of its own (named after the directory, one seed)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", "-b", help="Condition the others are compared with (default: the manifest's baseline)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write; the Markdown table goes beside it as .md (default: compare.html and compare.md in the sweep directory)."),
) -> None:
    """Compare a sweep's conditions over seeds: held-out metrics with 95% intervals and paired differences to
    the baseline (Markdown table), and one self-contained HTML page with per-condition curves and phase timelines."""
    from rich.markup import escape

    from rlvr_lab.diagnostics.runlog import RunDirError
    from rlvr_lab.lab.compare import CompareError, load_comparison, markdown_table, output_paths, save_comparison

    try:
        paths = output_paths(sweep_dir, out)
        comparison = load_comparison(sweep_dir, run_dirs or [], baseline=baseline)
    except (CompareError, RunDirError) as exc:  # not a sweep, an added path that is not a run, unknown baseline
        console.print(f"[bold red]compare error[/]: {escape(str(exc))}")
        raise typer.Exit(2) from None
    html_path, md_path = save_comparison(comparison, *paths)
    console.print(markdown_table(comparison), markup=False, highlight=False, soft_wrap=True)
    console.print(f"comparison page (open in a browser; works offline): [bold cyan]{escape(str(html_path))}[/]")
    console.print(f"Markdown table: [bold cyan]{escape(str(md_path))}[/]")


@app.command("eval")
def eval_model(
    model: str = typer.Argument(..., help="tiny, smollm2-135m-instruct, a .gguf file, a Hugging Face model directory, or a run directory (its last checkpoint and config)."),
    overrides: list[str] = typer.Argument(None, help="key.path=value config overrides, e.g. rollout.max_new_tokens=64."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="reasoning-gym task name (the trainer's held-out split of it)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="JSONL/Parquet file of questions with answer/answers (exact match)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Run config for the prompt, extraction and lengths (default: the run's own, else the defaults)."),
    questions: Optional[int] = typer.Option(None, "--questions", "-n", min=1, help="Questions to evaluate (default: the config's task.eval_size)."),
    samples: Optional[int] = typer.Option(None, "--samples", "-s", min=1, help="Sampled responses per question (default: the config's eval.samples)."),
    k: Optional[list[int]] = typer.Option(None, "--k", "-k", help="pass@k to report (repeatable; each <= samples)."),
    maj: Optional[list[int]] = typer.Option(None, "--maj", help="maj@k to report (repeatable; default: all samples)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, help="Sampling temperature of the n samples."),
    seed: int = typer.Option(1234, "--seed", help="Sampling seed (shared by both models with --compare)."),
    compare_with: Optional[str] = typer.Option(None, "--compare", help="A second model evaluated on the same questions and samples; paired differences are reported."),
    out: Path = typer.Option(Path("evals/latest"), "--out", "-o", help="Output directory: samples.jsonl, eval.json, eval.md."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: the config's run.threads)."),
) -> None:
    """Greedy accuracy, unbiased pass@k and maj@k with 95% intervals; every sample written to JSONL."""
    from rich.markup import escape

    from rlvr_lab.eval.run import EvalInputError, EvalRequest, run_eval

    request = EvalRequest(model=model, task=task, data=data, config=str(config) if config else None,
                          overrides=list(overrides or []), questions=questions, samples=samples,
                          ks=list(k) if k else None, maj=list(maj) if maj else None, temperature=temperature,
                          seed=seed, compare=compare_with, out=out, threads=threads)
    bars = progress_bars(console)

    def progress(label: str, total: int):
        bar = bars.add_task(f"eval {escape(label)}", total=total)
        return lambda n: bars.advance(bar, n)

    try:
        with bars:
            result = run_eval(request, progress=progress)
    except EvalInputError as exc:
        console.print(f"[bold red]eval error[/]: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"{result['questions']} questions x {result['samples']} samples (temperature "
                  f"{result['temperature']}), 95% intervals over questions", highlight=False)
    console.print(result["table"], markup=False, highlight=False, soft_wrap=True)
    console.print(f"samples and metrics: [bold cyan]{escape(str(out))}[/]")


@app.command("select")
def select(
    samples: Path = typer.Argument(..., help="samples.jsonl written by `rlvr eval` (each question's sampled responses are the candidates)."),
    selector: str = typer.Option(..., "--selector", help="Selector model: tiny, smollm2-135m-instruct, a .gguf file, a model or run directory."),
    method: str = typer.Option("hybrid", "--method", help="genselect (knockout tournament), judge (highest yes-rate) or hybrid (tournament to --n-s, then the judge)."),
    n_s: int = typer.Option(2, "--n-s", help="Hybrid: candidates the tournament keeps for the judge (-1: judge every candidate)."),
    n_j: int = typer.Option(4, "--n-j", min=1, help="Judge verdicts per candidate (their yes-rate is its score)."),
    order: str = typer.Option("genselect_then_judge", "--order", help="Hybrid order: genselect_then_judge (the paper's recipe) or judge_then_genselect."),
    group_size: int = typer.Option(2, "--group-size", min=2, help="Candidates per tournament game."),
    genselect_template: str = typer.Option("genselect", "--genselect-template", help="Built-in name or a template file with {problem} and {candidates}."),
    judge_template: str = typer.Option("judge", "--judge-template", help="Built-in name or a template file with {problem} and {solution}."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Longest selector reply."),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Selector sampling temperature (top-p 0.95)."),
    model: Optional[str] = typer.Option(None, "--model", help="With a --compare samples file: whose samples to select from."),
    questions: Optional[int] = typer.Option(None, "--questions", "-n", min=1, help="Only the first N questions."),
    seed: int = typer.Option(0, "--seed", help="Seed of the tournament shuffles and the selector's sampling."),
    out: Path = typer.Option(Path("evals/select"), "--out", "-o", help="Output directory: select.json, select.md, selections.jsonl."),
    wave: int = typer.Option(16, "--wave", min=1, help="Questions selected at once; the selector calls they wait for are generated as one batch."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads."),
) -> None:
    """Best-of-n selection with a language model (GenSelect, LLM-as-judge, hybrid) against oracle, random and majority."""
    from rich.markup import escape

    from rlvr_lab.eval.run import EvalInputError
    from rlvr_lab.eval.selection.run import SelectInputError, SelectSettings, run_select

    settings = SelectSettings(method=method, n_s=n_s, n_j=n_j, group_size=group_size, order=order,
                              temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                              genselect_template=genselect_template, judge_template=judge_template)
    bars = progress_bars(console)

    def progress(total: int):
        bar = bars.add_task(f"select ({escape(method)})", total=total)
        return lambda n: bars.advance(bar, n)

    try:
        with bars:
            summary = run_select(samples, selector, settings, out, model=model, questions=questions,
                                 threads=threads, wave=wave, progress=progress)
    except (SelectInputError, EvalInputError) as exc:
        console.print(f"[bold red]select error[/]: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(summary["table"], markup=False, highlight=False, soft_wrap=True)
    console.print(f"failed comparisons {summary['failed_comparisons']} of {summary['games']} games, unreadable "
                  f"verdicts {summary['judge_parse_failures']} of {summary['judge_calls']}; 95% intervals "
                  f"(Wilson for proportions, normal for means) | records: [bold cyan]{escape(str(out))}[/]", soft_wrap=True)


@app.command("mcq")
def mcq(
    model: str = typer.Argument(..., help="tiny, smollm2-135m-instruct, a .gguf file or a Hugging Face model directory."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="JSONL with question, choices, answer (index, choice text or letter); default: the shipped offline set."),
    formats: list[str] = typer.Option(["no_choices", "string_choices", "enumerated"], "--format", "-f", help="Prompt format (repeatable): no_choices, string_choices, enumerated."),
    shots: list[int] = typer.Option([0, 1], "--shots", help="In-context demonstrations (repeatable)."),
    questions: Optional[int] = typer.Option(None, "--questions", "-n", min=1, help="Score only the first N questions (all remain demonstration candidates)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the demonstration draw."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Sequences per forward pass."),
    out: Path = typer.Option(Path("evals/mcq"), "--out", "-o", help="Output directory: mcq.md, mcq.json, records.jsonl."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, mps or auto (cuda when present)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads."),
) -> None:
    """Attentiveness to answer choices (arXiv 2305.14596): probability mass on the choices, SFC-resolved share and
    accuracy bounds, sequence-scoring and PMI_DC accuracy, per prompt format and number of demonstrations."""
    import json

    from rich.markup import escape

    from rlvr_lab.eval.mcq.report import format_table, run_mcq
    from rlvr_lab.train.loop import pick_device

    set_threads(threads)
    try:
        results = run_mcq(model, str(data) if data else None, formats=formats, shots=shots, seed=seed,
                          batch_size=batch_size, out_jsonl=out / "records.jsonl", max_questions=questions,
                          device=pick_device(device))
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[bold red]mcq error[/]: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    table = format_table(results)
    (out / "mcq.md").write_text(table)
    (out / "mcq.json").write_text(json.dumps([r.summary() for r in results], indent=2) + "\n")
    console.print(table, markup=False, highlight=False, soft_wrap=True)
    console.print(f"95% intervals (Wilson; normal for the mean mass) | per-question records: "
                  f"[bold cyan]{escape(str(out / 'records.jsonl'))}[/]", soft_wrap=True)


@app.command("detect")
def detect(
    texts: Path = typer.Argument(..., help="JSONL with text and optional label (0 human-written, 1 machine-generated) and source."),
    model: str = typer.Option(..., "--model", "-m", help="Scoring model: tiny, smollm2-135m-instruct, a .gguf file or a Hugging Face model directory."),
    methods: list[str] = typer.Option(["lastde", "lastde_pp", "loglik", "logrank"], "--method", help="Score (repeatable): lastde, lastde_pp, loglik, logrank."),
    samples: int = typer.Option(100, "--samples", "-s", min=2, help="Lastde++: tokens sampled per position from the scoring model."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Texts (model windows) per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Lastde++ sampling (and of the tiny model's initialisation)."),
    max_context: Optional[int] = typer.Option(None, "--max-context", min=2, help="Longest window read at once (default: the model's context); longer texts are read in blocks with a carried-over prefix of half a window."),
    out: Path = typer.Option(Path("evals/detect"), "--out", "-o", help="Output directory: detect.md, detect.json, records.jsonl."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, mps or auto (cuda when present)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads."),
) -> None:
    """Machine-generated-text detection (Lastde, Lastde++ of arXiv 2410.06072, log-likelihood, log-rank): a score
    per text and, for labelled texts, AUROC per method with a 95% bootstrap interval."""
    from rich.markup import escape

    from rlvr_lab.analysis.detect import DetectSettings, run_detect
    from rlvr_lab.train.loop import pick_device

    set_threads(threads)
    bars = progress_bars(console)

    def progress(total: int):
        bar = bars.add_task("detect", total=total)
        return lambda n: bars.advance(bar, n)

    try:
        settings = DetectSettings(methods=tuple(methods), n_samples=samples, seed=seed, batch_size=batch_size,
                                  max_context=max_context)
        with bars:
            result = run_detect(texts, model, settings=settings, out_dir=out, device=pick_device(device),
                                progress=progress)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[bold red]detect error[/]: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(result.table, markup=False, highlight=False, soft_wrap=True)
    console.print(f"{result.summary['wall_s']:.1f}s | per-text records: [bold cyan]{escape(str(out / 'records.jsonl'))}[/]",
                  soft_wrap=True)


@app.command("value")
def value(
    train: Path = typer.Argument(..., help="JSONL of training samples: prompt and response, or question and answer (the SFT warm-start's shape)."),
    val: Path = typer.Option(..., "--val", help="JSONL of validation samples (same shapes): what the training samples are valued against."),
    model: str = typer.Option(..., "--model", "-m", help="Scoring model: tiny, smollm2-135m-instruct, a .gguf file or a Hugging Face model directory."),
    reduce: str = typer.Option("mean", "--reduce", help="mean: score against the validation mean representation; pairwise: also every validation sample."),
    vocab: str = typer.Option("all", "--vocab", help="Vocabulary rows kept: all (exact), inputs (ids occurring in both files), topk (per-batch top predictions)."),
    prediction_topk: int = typer.Option(32, "--prediction-topk", min=1, help="--vocab topk: most probable ids kept per position."),
    topk_abs: Optional[int] = typer.Option(None, "--topk-abs", min=1, help="Keep only the union of the k largest |prediction error| ids per position."),
    keep_ratio: float = typer.Option(1.0, "--keep-ratio", min=0.0, max=1.0, help="Training samples: fraction of lowest-likelihood response positions kept (0 < r <= 1)."),
    top_k: int = typer.Option(10, "--top-k", min=0, help="Highest- and lowest-scoring samples written to top.jsonl and bottom.jsonl."),
    target_template: str = typer.Option("<answer>{answer}</answer>", "--target-template", help="question/answer rows: the response, as in the warm-start ({answer} is the answer)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Samples per forward pass."),
    out: Path = typer.Option(Path("evals/value"), "--out", "-o", help="Output directory: scores.jsonl, top.jsonl, bottom.jsonl, value.json."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, mps or auto (cuda when present)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads."),
) -> None:
    """Forward-only data valuation (For-Value, arXiv 2508.10180): how well each training sample's last-layer
    gradient, read off one forward pass, aligns with the validation samples'. Higher is more valuable."""
    from rich.markup import escape

    from rlvr_lab.analysis.value import ValueSettings, run_value
    from rlvr_lab.train.loop import pick_device

    set_threads(threads)
    bars = progress_bars(console)

    def progress(label: str, total: int):
        bar = bars.add_task(f"value ({label})", total=total)
        return lambda n: bars.advance(bar, n)

    try:
        settings = ValueSettings(reduce=reduce, vocab=vocab, prediction_topk=prediction_topk, topk_abs=topk_abs,  # type: ignore[arg-type]
                                 keep_ratio=keep_ratio, batch_size=batch_size, top_k=top_k, target_template=target_template)
        with bars:
            summary = run_value(train, val, model, settings, out_dir=out, device=pick_device(device), progress=progress)
    except (FileNotFoundError, ValueError) as exc:  # ValueInputError is a ValueError
        console.print(f"[bold red]value error[/]: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"{summary['n_train']} training samples ({summary['n_train_empty_response']} with an empty response, "
                  f"score 0) valued against {summary['n_val']} validation samples ({reduce}) | score mean "
                  f"{summary['score_mean']:.4g}, sd {summary['score_std']:.4g}, min {summary['score_min']:.4g}, max "
                  f"{summary['score_max']:.4g} | {summary['train_samples_per_s']:.2f} samples/s", highlight=False, soft_wrap=True)
    for label, rows in (("highest", summary["top"]), ("lowest", summary["bottom"])):
        if rows:
            shown = ", ".join(f"line {r['line']} ({r['score']:.4g})" for r in rows[:5])
            console.print(f"{label}: {shown}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"scores: [bold cyan]{escape(str(out / 'scores.jsonl'))}[/] | top/bottom {top_k}: "
                  f"[bold cyan]{escape(str(out / 'top.jsonl'))}[/], [bold cyan]{escape(str(out / 'bottom.jsonl'))}[/]",
                  soft_wrap=True)


def _testbed_seeds(seeds: Optional[list[str]], extra: list[str]) -> list[int]:
    """``--seeds 0 1 2``: click gives --seeds its first value and the rest arrive as positional arguments, which
    are bare integers (an override always has an ``=``). Also ``--seeds 0,1,2`` and repeated ``--seeds``."""
    if not seeds:
        if extra:
            raise ValueError(f"arguments {extra} are neither key=value overrides nor values of --seeds")
        return [0, 1, 2]
    out = []
    for text in [*seeds, *extra]:
        for part in text.replace(",", " ").split():
            if not part.lstrip("-").isdigit():
                raise ValueError(f"--seeds takes integers, got {part!r} (overrides look like key=value)")
            out.append(int(part))
    return out


@app.command("testbed")
def testbed(
    name: str = typer.Argument(..., help="Testbed: hadamard-ce, specgd, fact-streams, icl-occam, llr-weighting."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Parameter overrides key=value (values read as YAML), e.g. steps=500 lr=0.5."),
    seeds: Optional[list[str]] = typer.Option(None, "--seeds", help="Seeds, e.g. --seeds 0 1 2 or --seeds 0,1,2 (default 0 1 2)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory: config.json, metrics.jsonl, summary.json, report.html (default testbeds/NAME)."),
    small: bool = typer.Option(False, "--small", help="The reduced sizes of the claim test (seconds instead of minutes)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads."),
) -> None:
    """A small synthetic experiment that tests one paper's claim over seeds (rlvr_lab.testbeds): the verdict with a
    95% interval, the metrics per seed and an HTML report with the paper's headline plot."""
    from rich.markup import escape

    from rlvr_lab.testbeds.runner import claim_line, run_testbed

    set_threads(threads)
    plain = [o for o in overrides or [] if "=" not in o]
    bars = progress_bars(console)

    def progress(total: int):
        bar = bars.add_task(f"testbed {name} (seeds)", total=total)
        return lambda n: bars.advance(bar, n)

    try:
        seed_list = _testbed_seeds(seeds, plain)
        with bars:
            summary = run_testbed(name, [o for o in overrides or [] if "=" in o], seed_list, out, small=small,
                                  progress=progress)
    except (ValueError, TypeError) as exc:
        console.print(f"[bold red]testbed error[/]: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    claim = summary["claim"]
    colour = {"holds": "green", "inconclusive": "yellow"}.get(claim["verdict"], "red")
    console.print(f"{escape(summary['testbed'])} (arXiv {escape(summary['paper'])}), seeds "
                  f"{', '.join(map(str, summary['seeds']))}, {summary['wall_s']:.1f}s", highlight=False, soft_wrap=True)
    console.print(f"[bold {colour}]{escape(claim_line(claim))}[/]", highlight=False, soft_wrap=True)
    console.print(escape(str(claim["text"])), highlight=False, soft_wrap=True)
    console.print(f"report: [bold cyan]{escape(summary['report'])}[/]", soft_wrap=True)


if __name__ == "__main__":
    app()

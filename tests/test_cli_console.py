"""The console reporter piped to a file: one line per RL step, and the paired error of the final change."""

from __future__ import annotations

import io

from rich.console import Console

from rlvr_lab.cli import ConsoleReporter
from rlvr_lab.eval.evaluate import PER_PROMPT
from rlvr_lab.eval.passk import standard_error

TOTAL = 12000


def piped_console() -> tuple[Console, io.StringIO]:
    """What rich gives a non-terminal stdout: no live display, and 80 columns."""
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=80), out


def rl_record(step: int, **extra) -> dict:
    """A record with the keys ``on_rl_step`` reads, as the trainer writes them."""
    return {
        "reward/mean": 0.1953125, "reward/accuracy": 0.1953125, "policy/entropy": 0.5442829728126526,
        "rollout/response_len_mean": 7.421875, "grpo/ppo_kl": 0.013381665456108749,
        "time/step_s": 1.9291453010009718, "optim/lr": 1e-6, "phase/label": "warmup", **extra,
    }


def test_each_rl_step_is_one_line_in_a_piped_console():
    console, out = piped_console()
    reporter = ConsoleReporter(console)
    records = {
        1: rl_record(1),
        2: rl_record(2, **{"phase/label": "healthy"}),
        # long numbers, a search count and an alert label: far wider than 80 columns
        3: rl_record(3, **{"reward/mean": -12345.678, "policy/entropy": 98765.4321,
                           "rollout/response_len_mean": 123456.7, "grpo/ppo_kl": -1234.56789,
                           "time/step_s": 98765.4321, "search/valid_searches_mean": 1234.5,
                           "phase/label": "accelerated_collapse"}),
        4: rl_record(4, **{"phase/label": "stagnation"}),
        TOTAL: rl_record(TOTAL, **{"phase/label": "entropy_collapse"}),
    }
    sample = "The answer is [/b] 42, [bold]not[/bold] 41.\nSo " + "x" * 200  # brackets are printed as typed
    for step, record in records.items():
        reporter("rl_step", step=step, total=TOTAL, record=record, samples=[sample, "other"])
        if step == 3:
            reporter("warning", message="step 3: entered accelerated_collapse (reward/mean=-1.2e+04, "
                                        "[slope]=-3.4); action: warn, and a long tail " + "y" * 120)
    reporter.progress.stop()

    lines = out.getvalue().splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    assert len(step_lines) == len(records)
    assert [line.split("|")[0].split()[1] for line in step_lines] == [f"{s}/{TOTAL}" for s in records]
    for line, record in zip(step_lines, records.values()):
        assert line.endswith(f"{record['time/step_s']:.2f}s") or line.endswith(record["phase/label"])
    assert "accelerated_collapse" in step_lines[2] and "searches 1234.50" in step_lines[2] and len(step_lines[2]) > 80
    assert step_lines[4].endswith("| entropy_collapse") and step_lines[3].endswith("| stagnation")
    assert not step_lines[0].endswith("warmup")  # routine labels are not shown
    # the samples (first and last step) are one line each too
    sample_lines = [line for line in lines if line.startswith("  sample: ")]
    assert sample_lines == [f"  sample: {sample[:120]!r}"] * 2
    # the rest is the warning, which wraps onto lines of its own, and the blank line of the stopped progress bar
    others = [line for line in lines if line not in step_lines and line not in sample_lines and line]
    assert others[0].startswith("warning: step 3") and lines.index(others[0]) == lines.index(step_lines[2]) + 1
    assert "[slope]=-3.4" in " ".join(others) and len(others) > 1


def eval_result(values: list[float], greedy: list[float]) -> dict:
    out = {"eval/n_prompts": float(len(values)), "eval/samples": 4.0}
    for key, vals in (("eval/greedy_acc", greedy), ("eval/pass@1", values)):
        out[key], out[key + "_se"] = sum(vals) / len(vals), standard_error(vals)
    out[PER_PROMPT] = {"eval/greedy_acc": greedy, "eval/pass@1": values}
    out["eval/seconds"] = 0.5
    return out


def test_final_table_shows_the_paired_error_of_the_change():
    console, out = piped_console()
    reporter = ConsoleReporter(console)
    before = eval_result([0.0, 0.0, 1.0, 1.0], greedy=[0.0, 1.0, 1.0, 1.0])
    after = eval_result([0.0, 1.0, 1.0, 1.0], greedy=[0.0, 1.0, 1.0, 1.0])
    reporter("eval", label="before_rl", result=before)
    reporter("done", summary={"eval": {"before_rl": before, "after_rl": after}, "status": "completed",
                              "run_dir": "runs/x"})
    text = out.getvalue()
    words = " ".join(text.split())  # the eval line may wrap; its per-prompt lists are not shown
    assert ("eval before_rl (n=4 prompts, 4 samples each): greedy_acc 0.750 ± 0.250 | pass@1 0.500 ± 0.289 "
            "held-out accuracy") in words
    pass_row = next(line for line in text.splitlines() if "pass@1" in line and "│" in line)
    # differences 0, 1, 0, 0: +0.250 with standard error 0.250 (unpaired: sqrt(1/12 + 1/16) = 0.382)
    assert "+0.250 ± 0.250" in pass_row
    greedy_row = next(line for line in text.splitlines() if "greedy_acc" in line and "│" in line)
    assert "+0.000 ± 0.000" in greedy_row
    assert "per-prompt differences" in words and "per_prompt" not in text


def test_final_table_of_a_summary_without_per_prompt_values_says_the_error_is_unpaired():
    console, out = piped_console()
    before = {"eval/n_prompts": 4.0, "eval/samples": 4.0, "eval/pass@1": 0.25, "eval/pass@1_se": 0.03}
    after = {"eval/n_prompts": 4.0, "eval/samples": 4.0, "eval/pass@1": 0.40, "eval/pass@1_se": 0.04}
    ConsoleReporter(console)("done", summary={"eval": {"before_rl": before, "after_rl": after}})
    text = out.getvalue()
    assert "+0.150 ± 0.050" in text and "(unpaired)" in text

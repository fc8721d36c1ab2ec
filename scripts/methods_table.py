"""Print README's table of what each packaged preset needs to have any effect, from the declarations.

Every row is derived from the registry entries (off-policy step, the count a component acts on, the
inputs it needs) and the preset's own config blocks, so the table cannot drift from the code:
``tests/test_readme.py`` checks that README holds exactly this output.

    python scripts/methods_table.py            # print the table
    python scripts/methods_table.py --write    # replace it in README.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlvr_lab.config import Config, inert_methods, load_config
from rlvr_lab.objectives import ADVANTAGE_ESTIMATORS
from rlvr_lab.presets import preset_names, preset_summary
from rlvr_lab.train.methods import TOOL_USE_PROVIDES, SINGLE_TURN_PROVIDES

sys.path.insert(0, str(Path(__file__).parent))
from readme_blocks import write_block  # noqa: E402

START, END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"


def effect_needs(cfg: Config) -> list[str]:
    """What the configured algorithm needs, beyond plain GRPO's mixed groups, to change the update."""
    algo, train = cfg.algorithm, cfg.train
    relative = ADVANTAGE_ESTIMATORS.entry(algo.advantage.name).meta.get("group_relative")
    out = ["groups whose rewards differ (an all-equal group gets advantage 0)"] if relative else []
    one_step = cfg.model_copy(deep=True)
    one_step.train.minibatches, one_step.train.epochs = 1, 1
    if inert_methods(one_step):
        out.append(f"an off-policy step (the preset sets `train.minibatches: {train.minibatches}`)")
    for _, registry, comp in algo.components():
        entry = registry.entry(comp.name)
        tool_inputs = sorted(entry.needs_for(comp.params) - SINGLE_TURN_PROVIDES & TOOL_USE_PROVIDES)
        if tool_inputs:
            out.append(f"tool-use (search) rollouts for `{comp.name}`'s {', '.join(tool_inputs)}")
        if entry.acts_on is not None:
            out.append(f"`{comp.name}` acts only on {entry.acts_on[1]} (`{entry.acts_on[0]}`)")
    if algo.overlong is not None:
        out.append("responses in the last fifth of the token budget, for the overlong penalty")
    if algo.dynamic_sampling.enabled:
        out.append(f"groups with mixed {'correctness' if algo.dynamic_sampling.metric == 'acc' else 'rewards'}; "
                   f"others are resampled (at most {algo.dynamic_sampling.max_gen_batches} rounds)")
    if algo.spear is not None:
        if algo.spear.toolcall is not None:
            out.append("tool calls, for the tool-call bonus (0 on single-turn rollouts)")
        if algo.spear.replay is not None:
            r = algo.spear.replay
            out.append(f"more than {r.trigger:g} x buffer_size positive-advantage trajectories within "
                       f"{r.tolerate_steps + 1} steps, for a replay (buffer: a quarter of the rollout batch)")
    if cfg.rollout.adaptive_temperature is not None:
        out.append("the previous step's entropy statistics, for the adaptive temperature (from step 2)")
    return out


def table() -> str:
    rows = ["| preset | method | needs, to have any effect |", "|---|---|---|"]
    for name in preset_names():
        cfg = load_config(None, presets=[name])
        if cfg.sft.loss.name != "cross_entropy" and name.startswith(cfg.sft.loss.name):  # a warm-start preset
            needs = ["a supervised warm-start (`sft.steps > 0`); it changes no RL step"]
        else:
            needs = effect_needs(cfg)
        cells = [f"`{name}`", preset_summary(name), "; ".join(needs) or "a scored rollout only"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = ap.parse_args()
    text = table()
    if not args.write:
        print(text)
        return
    write_block(text, START, END)


if __name__ == "__main__":
    main()

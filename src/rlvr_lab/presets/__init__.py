"""Algorithm presets shipped as package data: one YAML file per named method, one copy.

The CLI (``--preset dapo``, ``extends: grpo``), the verl plugin and the TRL adapter all read these
files through :func:`preset_path`; a preset is the config sections its paper's recipe sets (mostly
``algorithm``, plus ``train.minibatches`` where the method acts only off-policy).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml


def preset_dir() -> Path:
    """The folder holding the packaged preset files."""
    return Path(str(resources.files(__name__)))


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The packaged file of preset ``name`` (``dapo`` or ``dapo.yaml``); a KeyError names the valid ones."""
    stem = name.removesuffix(".yaml")
    path = preset_dir() / f"{stem}.yaml"
    if "/" in stem or not path.is_file():
        raise KeyError(f"no preset {name!r}; presets: {', '.join(preset_names())}")
    return path


def read_preset(name: str) -> dict:
    """The preset's YAML as a mapping."""
    return yaml.safe_load(preset_path(name).read_text()) or {}


def preset_summary(name: str) -> str:
    """The first sentence of the preset's leading comment (what the method is, with its paper)."""
    lines = []
    for line in preset_path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    end = re.search(r"\.(?=\s+[A-Z(]|$)", text)  # "eq. 13", "arXiv 2503.14476" and "Dr.GRPO" do not end it
    return text[: end.end()] if end else text

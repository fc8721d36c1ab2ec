"""RLVR_LAB_MAX_THREADS caps every thread count the library sets."""

import pytest
import torch

from rlvr_lab.threads import MAX_THREADS_ENV, capped, set_threads, thread_cap


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_no_cap_leaves_the_count(monkeypatch, restore_threads):
    monkeypatch.delenv(MAX_THREADS_ENV, raising=False)
    assert thread_cap() is None and capped(3) == 3
    set_threads(2)
    assert torch.get_num_threads() == 2


def test_cap_lowers_a_larger_count_and_keeps_a_smaller_one(monkeypatch, restore_threads):
    monkeypatch.setenv(MAX_THREADS_ENV, "1")
    assert capped(4) == 1
    set_threads(4)
    assert torch.get_num_threads() == 1
    monkeypatch.setenv(MAX_THREADS_ENV, "3")
    set_threads(2)
    assert torch.get_num_threads() == 2


def test_unset_count_still_obeys_the_cap(monkeypatch, restore_threads):
    torch.set_num_threads(2)
    monkeypatch.setenv(MAX_THREADS_ENV, "1")
    set_threads(None)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("raw", ["0", "-2", "two"])
def test_a_bad_cap_is_an_error_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv(MAX_THREADS_ENV, raw)
    with pytest.raises(ValueError, match=MAX_THREADS_ENV):
        thread_cap()


def test_the_trainer_applies_the_cap(monkeypatch, tmp_path, restore_threads):
    from pathlib import Path

    from rlvr_lab.config import load_config
    from rlvr_lab.train.loop import Trainer

    monkeypatch.setenv(MAX_THREADS_ENV, "1")
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", overrides=[
        f"run.output_dir={tmp_path}", "run.threads=2", "model.source=tiny", "sft.steps=0", "eval.enabled=false"])
    Trainer(cfg).setup()
    assert torch.get_num_threads() == 1

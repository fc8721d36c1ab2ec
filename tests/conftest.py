"""Suite-wide set-up.

- Dequantised GGUF copies go to one temporary folder for the whole session, shared by the xdist workers
  (entries are renamed into place, so two workers never read a half-written one), so the packaged SmolLM2
  is dequantised about once per run and nothing is written to the user's cache.
- Under pytest-xdist (``make test`` runs ``-n 2``) each worker gets an equal share of the cores:
  ``RLVR_LAB_MAX_THREADS`` caps every thread count the library sets (``run.threads=2`` in a test
  included), and the cap reaches the subprocesses the tests start. Two workers with two threads each
  on two cores would slow each other many times over.
- The slowest tests are collected first, so that the workers start them at once (``make test`` uses
  ``--dist worksteal``: a worker that runs out of tests takes queued ones from the other) instead of
  leaving one of them to run alone at the end.
"""

import os

import pytest

from rlvr_lab.threads import MAX_THREADS_ENV, available_cores, set_threads

WORKERS = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
if WORKERS:
    share = str(max(1, available_cores() // int(WORKERS)))
    for name in (MAX_THREADS_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = share
    set_threads(None)  # under the cap just set

# The longest tests of the suite (``pytest --durations``), started first under xdist.
FIRST = (
    "test_learning.py::test_tiny_model_learns_to_search_and_answer",
    "test_resume.py::test_killed_and_resumed_run_is_bitwise_equal_to_an_uninterrupted_one",
    "test_testbed_icl_occam.py::test_claim_small_transformer_prefers_the_simple_hypothesis",
    "test_lab_warm_start.py::test_a_sweep_trains_each_warm_start_once_before_its_cells",
    "test_smollm2_integration.py::test_one_grpo_step_on_smollm2",
    "test_testbed_fact_streams.py::test_claim_small_diversity_delays_id_recall",
    "test_rewards.py::test_a_verifier_that_never_returns_leaves_no_thread_or_process_behind",
    "test_models.py::test_smollm2_alias_loads_and_generates",
    "test_smollm2_integration.py::test_search_preset_on_smollm2_with_a_user_corpus",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}

    def key(item):
        name = f"{os.path.basename(item.fspath)}::{item.name}"
        return rank.get(name, len(FIRST))

    items.sort(key=key)  # stable: every other test keeps its order


@pytest.fixture(autouse=True, scope="session")
def _session_model_cache(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if WORKERS else base) / "rlvr-lab-cache"  # xdist: the workers' common parent
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLVR_LAB_CACHE", str(cache))
        yield

"""Suite-wide set-up: dequantised GGUF copies go to one temporary folder for the whole session, so the
packaged SmolLM2 is dequantised once per run and nothing is written to the user's cache."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _session_model_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLVR_LAB_CACHE", str(tmp_path_factory.mktemp("rlvr-lab-cache")))
        yield

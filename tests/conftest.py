from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
# CI sees shared/ beside the checkout (../shared/data); developers may point elsewhere.
SHARED_DATA = Path(os.environ.get("DS_SYNTH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared test data not found at {SHARED_DATA} (set DS_SYNTH_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def scripted_model():
    from doubles import ScriptedChatModel

    return ScriptedChatModel

"""pytest fixtures for backend tests."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file
from scail_fixtures import PARITY, tiny_model


@pytest.fixture(scope="session", autouse=True)
def private_user_cache(tmp_path_factory):
    """The attention probe's record and the compile cache go to a folder of this run, not the user's."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(scope="session")
def animate_case() -> dict:
    return load_file(PARITY / "case_animate.safetensors")


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return tiny_model()

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"

torch.set_num_threads(min(2, torch.get_num_threads()))


def running_in_ci(environ=os.environ) -> bool:
    """CI sets CI (true, 1, ...): there the reference fixtures are required, not optional."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference; its tests are skipped without it, except in CI, where they fail."""
    if not (REFERENCE_DIR / "spec.md").is_file():
        message = f"DeCo-Diff reference facts not found at {REFERENCE_DIR}"
        if running_in_ci():
            pytest.fail(f"{message}: CI must check the engine against the reference (clone ../shared beside "
                        "the checkout)", pytrace=False)
        pytest.skip(message)
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def model_fixture(reference_dir):
    return dict(np.load(reference_dir / "model_fixture_xs.npz"))


@pytest.fixture(scope="session")
def math_fixture(reference_dir):
    return dict(np.load(reference_dir / "math_fixture.npz"))


@pytest.fixture(scope="session")
def reference_unet(reference_dir):
    from engine import load_unet

    return load_unet(reference_dir / "reference_xs.pt")


@pytest.fixture(autouse=True)
def torch_fp32_runtime(monkeypatch):
    """Models run on torch fp32 unless a test says otherwise: no per-machine runtime check (which
    converts and times the demo model) inside unrelated tests (engine.runtime_choice.PIN_ENV)."""
    monkeypatch.setenv("DECO_INSPECTOR_RUNTIME", "torch fp32")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh app home folder (settings, results log, recipes) for one test: DECO_INSPECTOR_HOME."""
    path = tmp_path / "home"
    monkeypatch.setenv("DECO_INSPECTOR_HOME", str(path))
    return path

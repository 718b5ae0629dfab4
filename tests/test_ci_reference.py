"""In CI (`CI` set, as .ci/run does) the reference fixtures are required: a checkout without
../shared/reference fails their tests instead of skipping them silently."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import running_in_ci

TESTS = Path(__file__).resolve().parent
REFERENCE_TESTS = ("test_metrics.py::test_reproduces_reference_fixture",
                   "test_reference_equivalence.py::test_single_forward_gate_and_skip_alphas")


def test_ci_values():
    assert running_in_ci({"CI": "true"}) and running_in_ci({"CI": "1"}) and running_in_ci({"CI": "yes"})
    assert not running_in_ci({}) and not running_in_ci({"CI": ""}) and not running_in_ci({"CI": "false"})


@pytest.fixture(scope="module")
def clone_without_shared(tmp_path_factory) -> Path:
    """A copy of the reference tests and conftest in a folder with no ../shared beside it."""
    clone = tmp_path_factory.mktemp("clone") / "repo"
    (clone / "tests").mkdir(parents=True)
    for name in ("conftest.py", *{t.split("::")[0] for t in REFERENCE_TESTS}):
        shutil.copy(TESTS / name, clone / "tests" / name)
    return clone


def test_reference_tests_fail_in_ci(clone_without_shared):
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(TESTS.parent), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             *(f"tests/{t}" for t in REFERENCE_TESTS)], cwd=clone_without_shared, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "2 errors" in result.stdout and "skipped" not in result.stdout, result.stdout
    assert "reference facts not found" in result.stdout

"""Shared test setup: fixed seeds, float64 law checks (see pyproject: warnings are errors)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite golden report files")

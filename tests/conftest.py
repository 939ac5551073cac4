"""Test-wide settings: one thread (DESIGN §7: on a shared 2-core box two threads run slower than one), and the
``cuda`` marker: tests that need a GPU (``pytest -m cuda`` runs them; ``make gpu-check`` does) are skipped, with the
reason, where no CUDA device is visible."""

import pytest
import torch

torch.set_num_threads(1)

CUDA_SKIP_REASON = f"needs a CUDA device; none is visible here (torch {torch.__version__})"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped where none is visible; `pytest -m cuda`)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=CUDA_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)

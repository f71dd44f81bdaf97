"""Both paths of the gateway's HTTP face for one test module: ``from helpers.gateway_paths
import make_settings`` in a module runs each of its tests on the lean path and on the SDK
path (``gateway_path``), over conftest's own ``make_settings``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tether import Settings

__all__ = ["make_settings"]


@pytest.fixture(params=["lean", "sdk"])
def make_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Callable[..., Settings]:
    """conftest's ``make_settings``, with ``gateway_path`` set to this run's path."""

    def make(**overrides: Any) -> Settings:
        return make_settings(**{"gateway_path": request.param, **overrides})

    return make

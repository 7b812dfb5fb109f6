"""pytest fixtures for the simulator; load with ``pytest_plugins = ["openplatform.wechat.simulator.testing"]``.

``simulator_server``: one server on a free port for the whole session, its control API behind a
token (``SIMULATOR_CONTROL_TOKEN`` if set, else a random one), as on a staging network.
``simulator``: resets every bit of state (and the clock) before each test and returns a
``SimulatorControl`` (holding that token) whose ``.url`` is the base URL to point the WeChat client at.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from .control import SimulatorControl
from .server import SimulatorServer


@pytest.fixture(scope="session")
def simulator_control_token() -> str:
    return os.environ.get("SIMULATOR_CONTROL_TOKEN") or secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def simulator_server(simulator_control_token: str) -> Iterator[SimulatorServer]:
    with SimulatorServer(control_token=simulator_control_token) as server:
        yield server


@pytest.fixture
def simulator(simulator_server: SimulatorServer, simulator_control_token: str) -> Iterator[SimulatorControl]:
    control = SimulatorControl(simulator_server.url, token=simulator_control_token)
    control.reset()
    try:
        yield control
    finally:
        control.close()

"""pytest fixtures for the simulator; load with ``pytest_plugins = ["openplatform.wechat.simulator.testing"]``.

``simulator_server``: one server on a free port for the whole session.
``simulator``: resets every bit of state (and the clock) before each test and returns a
``SimulatorControl`` whose ``.url`` is the base URL to point the WeChat client at.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .control import SimulatorControl
from .server import SimulatorServer


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


@pytest.fixture
def simulator(simulator_server: SimulatorServer) -> Iterator[SimulatorControl]:
    control = SimulatorControl(simulator_server.url)
    control.reset()
    try:
        yield control
    finally:
        control.close()

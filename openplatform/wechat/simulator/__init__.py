"""A stateful fake of api.weixin.qq.com and mp.weixin.qq.com's authorization page (docs/architecture.md §5).

Used by the local run (``manage.py wechat_simulator``), the tests (``testing.py`` fixtures) and the
benchmarks. It imports no Django: ``state`` holds the rules, ``app`` serves them over WSGI, ``server``
runs that over HTTP, ``control`` is the Python client of its /_sim/ control API.
"""

from .app import SimulatorApp
from .control import SimulatorControl, SimulatorControlError
from .server import SimulatorServer
from .state import SimulatorState

__all__ = ["SimulatorApp", "SimulatorControl", "SimulatorControlError", "SimulatorServer", "SimulatorState"]

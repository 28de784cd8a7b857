"""A two-zone mesh on loopback with real Envoy: the topology `zonemesh demo` and the end-to-end
tests run, the processes behind it, and the traffic that shows where requests land."""

from zonemesh.demo.processes import ManagedProcess, ProcessError, ProcessGroup
from zonemesh.demo.topology import TwoZoneMesh, new_run_dir
from zonemesh.demo.traffic import Answer, Load

__all__ = [
    "Answer",
    "Load",
    "ManagedProcess",
    "ProcessError",
    "ProcessGroup",
    "TwoZoneMesh",
    "new_run_dir",
]

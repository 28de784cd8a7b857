"""Former home of `Runtime`, kept only for benchmarks/ (owned elsewhere) that still import it.

The kernel lives in `zonemesh.runtime.kernel`; nothing under zonemesh/ imports this module
(tests/test_import_graph.py refuses a middle layer importing `zonemesh.cp`).
"""

from zonemesh.runtime.kernel import Component, Runtime

__all__ = ["Component", "Runtime"]

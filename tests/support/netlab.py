"""Skipping lab tests where a network lab cannot be built, with the reason said once."""

from __future__ import annotations

import functools
import shutil

import pytest

from zonemesh.lab.netns import unavailable_reason


@functools.cache
def lab_unavailable() -> str | None:
    reason = unavailable_reason()
    if reason is None and shutil.which("iptables-restore") is None:
        reason = "the network lab tests need iptables (apt-get install iptables)"
    if reason is None and shutil.which("curl") is None:
        reason = "the network lab tests need curl"
    return reason


def requires_lab() -> pytest.MarkDecorator:
    reason = lab_unavailable()
    return pytest.mark.skipif(reason is not None, reason=reason or "")

"""Skipping lab tests where a network lab cannot be built, with the reason."""

from __future__ import annotations

import functools

import pytest

from zonemesh.lab.mesh import unavailable_reason


@functools.cache
def lab_unavailable() -> str | None:
    return unavailable_reason()


def requires_lab() -> pytest.MarkDecorator:
    reason = lab_unavailable()
    return pytest.mark.skipif(reason is not None, reason=reason or "")

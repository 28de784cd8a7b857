"""Validation errors that name the offending field the way Kuma does (`spec.ports[0].port`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


class ValidationError(Exception):
    """One or more violations; nothing was stored."""

    def __init__(self, violations: list[Violation], title: str = "Resource is not valid") -> None:
        self.violations = violations
        self.title = title
        super().__init__("; ".join(str(v) for v in violations) or title)


class Violations:
    """Collects violations under a field path while a validator walks a spec."""

    def __init__(self) -> None:
        self.items: list[Violation] = []

    def add(self, field: str, reason: str) -> None:
        self.items.append(Violation(field, reason))

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationError(self.items)

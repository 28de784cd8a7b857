"""Secret: opaque base64 data scoped to a mesh (as in Kuma); holds each mesh's builtin CA."""

from __future__ import annotations

import base64
import binascii

from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations


class SecretSpec(Model):
    data: str

    def validate_semantics(self, path: str, errors: Violations) -> None:
        if not self.data:
            errors.add("data", "cannot be empty")
            return
        try:
            base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            errors.add("data", "must be valid base64")

    @property
    def value(self) -> bytes:
        return base64.b64decode(self.data)

"""HostnameGenerator: a template that gives services DNS names."""

from __future__ import annotations

from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import LabelSelector


class HostnameGeneratorSelector(Model):
    mesh_service: LabelSelector | None = None
    mesh_multi_zone_service: LabelSelector | None = None
    mesh_external_service: LabelSelector | None = None


class HostnameGeneratorSpec(Model):
    selector: HostnameGeneratorSelector
    template: str

    def validate_semantics(self, path: str, errors: Violations) -> None:
        chosen = [
            (field, s)
            for field, s in (
                ("meshService", self.selector.mesh_service),
                ("meshMultiZoneService", self.selector.mesh_multi_zone_service),
                ("meshExternalService", self.selector.mesh_external_service),
            )
            if s is not None
        ]
        for field, selector in chosen:
            selector.validate_semantics(f"{path}.selector.{field}", errors)
        if len(chosen) != 1:
            errors.add(
                f"{path}.selector",
                "exactly one of meshService, meshMultiZoneService, meshExternalService "
                "has to be defined",
            )
        if not self.template:
            errors.add(f"{path}.template", "cannot be empty")
        else:
            # Imported here to keep the module graph acyclic at import time.
            from zonemesh.resources.hostname_template import TemplateError, parse_template

            try:
                parse_template(self.template)
            except TemplateError as e:
                errors.add(f"{path}.template", f"could not parse template: {e}")

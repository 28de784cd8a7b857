"""zonemesh: a multi-zone control plane for Envoy implementing Kuma's MeshMultiZoneService."""

__version__ = "0.1.0"

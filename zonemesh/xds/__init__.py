"""The xDS (ADS) server: cache of what each proxy should have, and the server that streams it.

Modules: `cache` (snapshots, interning), `protocol` (the xDS rules per stream, no I/O),
`server` (gRPC streams), `registry` (proxy identity and lifecycle), `metrics`,
`readiness` (data-plane readiness reports), `types` (push order, message classes),
`component` (`XdsServer`, wiring it together).
Never import this package as `xds`: that name belongs to the xds-protos wheel.
"""

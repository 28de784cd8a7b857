"""TLS between zonemesh's parts: the control plane's server material, client addresses, and
the start check clients run before they connect (see `docs` in each module)."""

"""The control plane's HTTP API: Kuma's resource paths, inspect views and diagnostics."""

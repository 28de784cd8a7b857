"""The `zonemesh` command line: the control plane, the data plane, and a REST client."""

"""Generated from protos/zonemesh/kds/v1/kds.proto by `python -m zonemesh.federation.gen_protos`."""

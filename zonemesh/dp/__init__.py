"""The data plane side: Envoy bootstrap rendering and the Envoy process wrapper."""

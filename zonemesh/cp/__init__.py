"""The control-plane process: one event loop hosting the API, computed state, xDS and KDS."""

"""Computed state: what a zone control plane derives from the stored resources."""

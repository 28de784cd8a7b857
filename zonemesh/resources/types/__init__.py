"""Spec and status models, one module per resource type."""

"""Policy stages: each reads one policy type from the state and resolves it per proxy and
destination; the generators apply the result. `matching` holds Kuma's targetRef rules."""

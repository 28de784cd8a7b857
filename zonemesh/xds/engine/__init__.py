"""The incremental generation engine under the xDS server: what changed, what it affects, when
(the burst rule it waits on, `runtime.debounce`, is shared with computed state).

- `tracker`: the mesh state kept up to date from store and health events (no store re-reads);
- `scheduler`: which proxies a change touches, and how little of each is recomputed; it owns
  the translation caches (`translate.caches`) every state it builds carries;
- `sharing`: equal outbounds shared between registrations;
- `gc_policy`: the garbage-collector settings, with the measurement behind them.
"""

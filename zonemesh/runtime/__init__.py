"""The runtime kernel every middle layer is given: `Runtime`, shared views, health, leadership.

Below state, translate, xds, federation and api, so they import it and never the composition
root (`zonemesh.cp`), which imports them all. The package itself imports nothing: each module
is loaded only by those who need it (leadership pulls in psycopg, health does not).
"""

"""What the control plane and `zonemesh dp run` must agree on, in one home both import.

The CP writes these names and formats into the Envoy config it serves (`zonemesh.translate`),
the data plane serves or reads them (`zonemesh.dp`): SDS secret names, the DNS table's
listener, socket and format. Neither side imports the other, so `dp run` never loads the
translation layer, and a name can never drift between the two.
"""

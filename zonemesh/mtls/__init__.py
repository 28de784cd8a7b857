"""Mutual TLS: each mesh's builtin CA and the per-proxy identity certificates it issues.

`ca` creates CAs, issues leaf certificates and (de)serializes the CA bundle stored as a Secret;
`identities` caches issued certificates so that regenerating a proxy does not re-issue one.
"""

from zonemesh.mtls.ca import (
    CA_SECRET_NAME,
    CaBundleError,
    IssuedCert,
    MeshCA,
    create_mesh_ca,
    decode_ca_bundle,
    encode_ca_bundle,
    issue_leaf,
)
from zonemesh.mtls.identities import (
    DEFAULT_CERT_VALIDITY,
    IdentityProvider,
)

__all__ = [
    "CA_SECRET_NAME",
    "DEFAULT_CERT_VALIDITY",
    "CaBundleError",
    "IdentityProvider",
    "IssuedCert",
    "MeshCA",
    "create_mesh_ca",
    "decode_ca_bundle",
    "encode_ca_bundle",
    "issue_leaf",
]

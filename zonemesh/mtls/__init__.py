"""Mutual TLS: each mesh's builtin CA, zone intermediates, and signing workloads' CSRs.

`ca` creates roots and intermediates, signs CSRs and (de)serializes the stored bundles;
`trust` resolves which CA a control plane signs with and what proxies trust; `identities`
says which SPIFFE IDs (and tags) a proxy's resource claims. Workloads keep their own keys.
"""

from zonemesh.mtls.ca import (
    CA_SECRET_NAME,
    CaBundleError,
    CsrError,
    IssuedCert,
    MeshCA,
    SignedCert,
    create_mesh_ca,
    decode_ca_bundle,
    encode_ca_bundle,
    issue_intermediate,
    issue_leaf,
    sign_csr,
)

__all__ = [
    "CA_SECRET_NAME",
    "CaBundleError",
    "CsrError",
    "IssuedCert",
    "MeshCA",
    "SignedCert",
    "create_mesh_ca",
    "decode_ca_bundle",
    "encode_ca_bundle",
    "issue_intermediate",
    "issue_leaf",
    "sign_csr",
]

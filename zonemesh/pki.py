"""X.509 building blocks shared by the mesh CAs (`zonemesh.mtls`) and the control plane's own
TLS certificates (`zonemesh.tls`), so both state key usages the same way."""

from __future__ import annotations

from cryptography import x509


def key_usage(
    *, digital_signature: bool, key_encipherment: bool = False, cert_sign: bool = False
) -> x509.KeyUsage:
    """A KeyUsage with only the named bits set; `cert_sign` also allows signing CRLs."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )

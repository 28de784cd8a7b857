"""The workload's certificate: its own key, a CSR to the zone CP, renewal before expiry.

`WorkloadCertificates.run` makes a fresh EC P-256 key (in memory only), sends a CSR over the
authenticated channel (`/zonemesh.ca.v1.CertificateAuthority/Sign`, token in metadata
`authorization`), and hands chain, key and trust bundle to the local SDS server. It signs again
at about two thirds of the certificate's lifetime (with a little jitter, so instances signed
together do not all come back together), and at once when the CP reports another trust
bundle (`trust_changed`, fed from the readiness answers). Each signing uses a new key.

Until the proxy's ADS stream has registered it, the CP answers NOT_FOUND; while the mesh has
no CA there, UNAVAILABLE: both are retried with a backoff. A refused token (UNAUTHENTICATED,
PERMISSION_DENIED) is not: `CertificateRefused` ends `dp run` with the CP's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zonemesh.dp.sds import LocalSdsServer, WorkloadSecrets

log = logging.getLogger("zonemesh.dp")

SIGN_METHOD = "/zonemesh.ca.v1.CertificateAuthority/Sign"
RENEW_FRACTION = 2 / 3
JITTER_FRACTION = 0.05  # of the lifetime, either way
MIN_RENEW_S = 0.5
RETRY_S = (0.2, 5.0)  # first and longest wait between failed attempts
FATAL = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


class CertificateRefused(Exception):
    """The CP will not sign for this proxy with this token; retrying cannot help."""


@dataclass(frozen=True)
class Signed:
    chain_pem: bytes
    trust_pem: bytes
    trust_fingerprint: str
    not_after: datetime
    serial: str


def new_key_and_csr(node_id: str) -> tuple[bytes, bytes]:
    """(PKCS#8 key PEM, CSR PEM). The CSR's subject is informative only: the CP chooses the
    certificate's identities from what the token allows."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zonemesh"),
                    x509.NameAttribute(NameOID.COMMON_NAME, node_id[:64]),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def renew_delay(not_after: datetime, now: datetime, rng: random.Random) -> float:
    """Seconds until renewal: ~2/3 of what is left, +-5% of it."""
    remaining = (not_after - now).total_seconds()
    jitter = rng.uniform(-JITTER_FRACTION, JITTER_FRACTION)
    return max(remaining * (RENEW_FRACTION + jitter), MIN_RENEW_S)


class WorkloadCertificates:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        node_id: str,
        mesh: str,
        metadata: Sequence[tuple[str, str]] | None,
        sds: LocalSdsServer,
    ) -> None:
        self.node_id = node_id
        self.mesh = mesh
        self.sds = sds
        self.signings = 0  # certificates received (tests, logs)
        self.current: Signed | None = None
        self._metadata = tuple(metadata) if metadata else None
        self._sign = channel.unary_unary(SIGN_METHOD)
        self._resign = asyncio.Event()
        self._rng = random.Random()

    def trust_changed(self, fingerprint: str) -> None:
        """The CP now trusts another root for our mesh: sign again under it, now."""
        current = self.current
        if fingerprint and current is not None and fingerprint != current.trust_fingerprint:
            log.info("the mesh's trust bundle changed; renewing the certificate")
            self._resign.set()

    async def sign_once(self) -> Signed:
        """One CSR; raises `grpc.aio.AioRpcError` (or `CertificateRefused`)."""
        key_pem, csr_pem = new_key_and_csr(self.node_id)
        body = json.dumps(
            {"nodeId": self.node_id, "proxyType": "dataplane", "csr": csr_pem.decode()}
        ).encode()
        try:
            answer = json.loads(await self._sign(body, metadata=self._metadata, timeout=5.0))
        except grpc.aio.AioRpcError as e:
            if e.code() in FATAL:
                raise CertificateRefused(
                    f"the control plane refused to sign a certificate: {e.details()}"
                ) from None
            raise
        signed = Signed(
            chain_pem=answer["certificateChain"].encode(),
            trust_pem=answer["trustBundle"].encode(),
            trust_fingerprint=answer.get("trustFingerprint", ""),
            not_after=datetime.fromisoformat(answer["notAfter"]),
            serial=str(answer.get("serial", "")),
        )
        self.sds.update(WorkloadSecrets(self.mesh, signed.chain_pem, key_pem, signed.trust_pem))
        self.current = signed
        self.signings += 1
        return signed

    async def run(self) -> None:
        """Sign, serve, renew — until cancelled; raises `CertificateRefused`."""
        delay = RETRY_S[0]
        while True:
            self._resign.clear()
            try:
                signed = await self.sign_once()
            except grpc.aio.AioRpcError as e:
                current = self.current
                level = logging.DEBUG if e.code() is grpc.StatusCode.NOT_FOUND else logging.WARNING
                if current is not None and current.not_after - datetime.now(UTC) < timedelta(
                    seconds=delay * 2
                ):
                    level = logging.ERROR
                log.log(level, "certificate not signed yet (%s): %s", e.code().name, e.details())
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_S[1])
                continue
            delay = RETRY_S[0]
            wait = renew_delay(signed.not_after, datetime.now(UTC), self._rng)
            log.info(
                "certificate %s signed, valid until %s; renewing in %.1fs",
                signed.serial,
                signed.not_after.isoformat(),
                wait,
            )
            # `asyncio.timeout`, not `wait_for`, which on Python 3.11 can lose a
            # cancellation arriving as the event is set (and then `dp run` would not stop).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._resign.wait()

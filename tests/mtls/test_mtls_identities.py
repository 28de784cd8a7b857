"""`IdentityProvider`: one certificate per identity until it is due, then a fresh one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mtls_helpers import uri_sans

from zonemesh.mtls import IdentityProvider, create_mesh_ca

START = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def test_same_identity_gets_the_same_bytes_until_two_thirds_of_its_life() -> None:
    clock = Clock()
    ca = create_mesh_ca("default", now=START)
    provider = IdentityProvider(timedelta(hours=3), clock=clock)

    first = provider.identity(ca, ["spiffe://default/web"])
    assert provider.identity(ca, ["spiffe://default/web"]).cert_pem == first.cert_pem
    assert provider.next_rotation() == START + timedelta(hours=2)

    clock.now = START + timedelta(hours=1, minutes=59)
    assert provider.identity(ca, ["spiffe://default/web"]) is first
    assert provider.issued == 1

    clock.now = START + timedelta(hours=2)
    second = provider.identity(ca, ["spiffe://default/web"])
    assert second.cert_pem != first.cert_pem and second.key_pem != first.key_pem
    assert second.not_after == clock.now + timedelta(hours=3)
    assert first.not_after > clock.now  # the old one was still valid when replaced
    assert provider.next_rotation() == clock.now + timedelta(hours=2)


def test_identities_are_keyed_by_mesh_ids_and_ca() -> None:
    provider = IdentityProvider(timedelta(hours=1))
    ca = create_mesh_ca("default")
    other_mesh = create_mesh_ca("other")

    web = provider.identity(ca, ["spiffe://default/web", "spiffe://default/api"])
    assert provider.identity(ca, ["spiffe://default/api", "spiffe://default/web"]) is web
    assert uri_sans(web.cert_pem) == ["spiffe://default/api", "spiffe://default/web"]
    api = provider.identity(ca, ["spiffe://default/api"])
    assert api is not web
    assert provider.identity(other_mesh, ["spiffe://other/web"]) is not web

    # A replaced CA (another fingerprint) re-issues at once.
    new_ca = create_mesh_ca("default")
    renewed = provider.identity(new_ca, ["spiffe://default/web", "spiffe://default/api"])
    assert renewed is not web
    from cryptography import x509

    x509.load_pem_x509_certificate(renewed.cert_pem).verify_directly_issued_by(new_ca.certificate)


def test_sweep_forgets_identities_no_proxy_asked_for() -> None:
    clock = Clock()
    provider = IdentityProvider(timedelta(hours=3), clock=clock)
    ca = create_mesh_ca("default")
    provider.identity(ca, ["spiffe://default/gone"])
    clock.now += timedelta(minutes=30)
    kept = provider.identity(ca, ["spiffe://default/web"])

    provider.begin_sweep()
    assert provider.identity(ca, ["spiffe://default/web"]) is kept
    provider.end_sweep()

    assert len(provider) == 1
    # The gone identity no longer schedules wake-ups; the kept one does.
    assert provider.next_rotation() == START + timedelta(minutes=30) + timedelta(hours=2)


def test_nothing_cached_means_no_rotation_to_schedule() -> None:
    assert IdentityProvider().next_rotation() is None

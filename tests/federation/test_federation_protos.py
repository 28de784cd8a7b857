"""The committed gRPC modules must match protos/zonemesh/kds/v1/kds.proto."""

from __future__ import annotations

from zonemesh.federation import gen_protos


def test_generated_modules_are_up_to_date() -> None:
    fresh = gen_protos.generate()
    assert set(fresh) == set(gen_protos.GENERATED)
    for name, text in fresh.items():
        committed = (gen_protos.OUT_DIR / name).read_text()
        assert committed == text, (
            f"zonemesh/federation/proto/{name} is out of date with "
            f"{gen_protos.PROTO_FILE}: run `python -m zonemesh.federation.gen_protos`"
        )

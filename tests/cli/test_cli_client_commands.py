"""`apply`, `get`, `delete`, `inspect` through the installed console script."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import yaml
from cli_helpers import ThreadedCp, zonemesh

from zonemesh.resources.base import ResourceKey
from zonemesh.runtime.insights import ProxyInsight

MMZS_YAML = """\
type: MeshMultiZoneService
name: echo
mesh: default
spec:
  selector: {meshService: {matchLabels: {kuma.io/display-name: echo}}}
  ports: [{port: 1027, appProtocol: http}]
"""

MESH_AND_DATAPLANE_YAML = """\
type: Mesh
name: payments
---
type: Dataplane
mesh: payments
name: web-1
networking:
  address: 127.0.1.11
  inbound:
  - {port: 21027, servicePort: 1027, tags: {kuma.io/service: web, kuma.io/protocol: http}}
"""

INGRESS_JSON = {
    "type": "ZoneIngress",
    "name": "ingress-1",
    "networking": {"address": "127.0.1.100", "port": 10001},
}


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_apply_a_file_creates_then_updates(cp: ThreadedCp, tmp_path: Path) -> None:
    manifest = tmp_path / "all.yaml"
    manifest.write_text(MESH_AND_DATAPLANE_YAML + "---\n" + MMZS_YAML)
    first = zonemesh("apply", "-f", str(manifest), cp_url=cp.url)
    assert first.returncode == 0, first.stderr
    assert lines(first.stdout) == [
        'resource type="Mesh" mesh="" name="payments" Created',
        'resource type="Dataplane" mesh="payments" name="web-1" Created',
        'resource type="MeshMultiZoneService" mesh="default" name="echo" Created',
    ]
    second = zonemesh("apply", "-f", str(manifest), cp_url=cp.url)
    assert second.returncode == 0
    assert all(line.endswith(" Updated") for line in lines(second.stdout))


def test_apply_a_directory_and_stdin(cp: ThreadedCp, tmp_path: Path) -> None:
    (tmp_path / "a-mmzs.yaml").write_text(MMZS_YAML)
    (tmp_path / "b-ingress.json").write_text(json.dumps(INGRESS_JSON))
    (tmp_path / "notes.txt").write_text("not a manifest")
    result = zonemesh("apply", "-f", str(tmp_path), cp_url=cp.url)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [
        'resource type="MeshMultiZoneService" mesh="default" name="echo" Created',
        'resource type="ZoneIngress" mesh="" name="ingress-1" Created',
    ]
    piped = zonemesh("apply", "-f", "-", cp_url=cp.url, stdin=MMZS_YAML)
    assert lines(piped.stdout) == [
        'resource type="MeshMultiZoneService" mesh="default" name="echo" Updated'
    ]


def test_apply_reports_invalid_files_and_applies_nothing(cp: ThreadedCp, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MMZS_YAML)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        MMZS_YAML.replace("name: echo", "name: broken").replace(
            "ports: [{port: 1027, appProtocol: http}]", "ports: []"
        )
    )
    result = zonemesh("apply", "-f", str(good), "-f", str(bad), cp_url=cp.url)
    assert result.returncode == 1
    assert f"{bad}: spec.ports: cannot be empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    listing = zonemesh("get", "meshmultizoneservices", cp_url=cp.url)
    assert "No resources found in default mesh" in listing.stdout


def test_apply_shows_the_servers_field_errors(cp: ThreadedCp) -> None:
    elsewhere = MMZS_YAML.replace("mesh: default", "mesh: nope")
    result = zonemesh("apply", "-f", "-", cp_url=cp.url, stdin=elsewhere)
    assert result.returncode == 1
    assert "mesh: mesh of name nope is not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_apply_unparsable_input(cp: ThreadedCp) -> None:
    result = zonemesh("apply", "-f", "-", cp_url=cp.url, stdin="type: [oops\n")
    assert result.returncode == 1
    assert "could not parse" in result.stderr


def test_apply_prints_warnings_to_stderr(cp: ThreadedCp) -> None:
    labelled = MMZS_YAML.replace(
        "mesh: default\n", "mesh: default\nlabels: {kuma.io/origin: global}\n"
    )
    result = zonemesh("apply", "-f", "-", cp_url=cp.url, stdin=labelled)
    assert result.returncode == 0
    assert result.stderr.startswith("Warning: ")
    assert "kuma.io/origin" in result.stderr


def test_get_table_yaml_and_json(cp: ThreadedCp) -> None:
    zonemesh("apply", "-f", "-", cp_url=cp.url, stdin=MMZS_YAML)

    table = zonemesh("get", "meshmultizoneservices", cp_url=cp.url)
    assert table.returncode == 0, table.stderr
    header, row = lines(table.stdout)
    assert header.split() == [
        "MESH",
        "NAME",
        "PORTS",
        "VIPS",
        "HOSTNAMES",
        "MESH",
        "SERVICES",
        "AGE",
    ]
    assert row.split()[:3] == ["default", "echo", "1027/http"]

    by_alias = zonemesh("get", "mzsvc", "-o", "yaml", cp_url=cp.url)
    listing = yaml.safe_load(by_alias.stdout)
    assert list(listing) == ["items", "next", "total"]
    assert listing["total"] == 1 and listing["next"] is None
    assert listing["items"][0]["spec"]["ports"] == [{"port": 1027, "appProtocol": "http"}]

    one = zonemesh("get", "meshmultizoneservice", "echo", "-o", "json", cp_url=cp.url)
    item = json.loads(one.stdout)
    assert item["name"] == "echo" and item["type"] == "MeshMultiZoneService"

    one_table = zonemesh("get", "mzsvc", "echo", cp_url=cp.url)
    assert lines(one_table.stdout)[1].split()[:2] == ["default", "echo"]


def test_get_global_and_dataplane_columns(cp: ThreadedCp) -> None:
    zonemesh("apply", "-f", "-", cp_url=cp.url, stdin=MESH_AND_DATAPLANE_YAML)
    meshes = lines(zonemesh("get", "meshes", cp_url=cp.url).stdout)
    assert meshes[0].split() == ["NAME", "mTLS", "LOCALITY", "ZONEEGRESS", "AGE"]
    assert [m.split()[0] for m in meshes[1:]] == ["default", "payments"]

    dataplanes = lines(zonemesh("get", "dataplanes", "-m", "payments", cp_url=cp.url).stdout)
    assert dataplanes[0].split() == ["MESH", "NAME", "TAGS", "ADDRESS", "AGE"]
    assert dataplanes[1].split()[:4] == [
        "payments",
        "web-1",
        "kuma.io/protocol=http,kuma.io/service=web",
        "127.0.1.11",
    ]


def test_get_pages_and_empty_lists(cp: ThreadedCp) -> None:
    assert lines(zonemesh("get", "mzsvc", cp_url=cp.url).stdout) == [
        "No resources found in default mesh"
    ]
    zonemesh("apply", "-f", "-", cp_url=cp.url, stdin=MMZS_YAML)
    zonemesh(
        "apply", "-f", "-", cp_url=cp.url, stdin=MMZS_YAML.replace("name: echo", "name: other")
    )
    first = zonemesh("get", "mzsvc", "--size", "1", cp_url=cp.url)
    assert "Rerun command with --offset=1 argument to retrieve more resources" in first.stdout
    second = zonemesh("get", "mzsvc", "--size", "1", "--offset", "1", cp_url=cp.url)
    assert lines(second.stdout)[1].split()[1] == "other"
    assert "Rerun" not in second.stdout


def test_get_errors_are_readable(cp: ThreadedCp) -> None:
    unknown_type = zonemesh("get", "widgets", cp_url=cp.url)
    assert unknown_type.returncode == 1
    assert 'unknown resource type "widgets"' in unknown_type.stderr
    missing = zonemesh("get", "mzsvc", "ghost", cp_url=cp.url)
    assert missing.returncode == 1
    assert 'MeshMultiZoneService "ghost" not found' in missing.stderr
    assert "Traceback" not in missing.stderr + unknown_type.stderr


def test_delete(cp: ThreadedCp) -> None:
    zonemesh("apply", "-f", "-", cp_url=cp.url, stdin=MMZS_YAML)
    deleted = zonemesh("delete", "mzsvc", "echo", cp_url=cp.url)
    assert deleted.returncode == 0
    assert deleted.stdout.strip() == 'deleted MeshMultiZoneService "echo"'
    again = zonemesh("delete", "meshmultizoneservice", "echo", cp_url=cp.url)
    assert again.returncode == 1
    assert "not found" in again.stderr


def test_unreachable_control_plane() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}"
    for args in (["get", "meshes"], ["apply", "-f", "-"], ["inspect", "zones"]):
        result = zonemesh(*args, "--cp", url, stdin=MMZS_YAML)
        assert result.returncode == 1
        assert f"could not reach the control plane at {url}" in result.stderr
        assert "Traceback" not in result.stderr


class EmptyXdsView:
    def insights(self) -> list[ProxyInsight]:
        return []

    def config_dump(self, key: ResourceKey) -> dict[str, Any] | None:
        return None


def test_inspect_with_an_empty_view() -> None:
    server = ThreadedCp(views={"xds": EmptyXdsView()})
    server.start()
    try:
        zonemesh("apply", "-f", "-", cp_url=server.url, stdin=MESH_AND_DATAPLANE_YAML)
        result = zonemesh("inspect", "dataplanes", "-m", "payments", cp_url=server.url)
        assert result.returncode == 0, result.stderr
        header, row = lines(result.stdout)
        assert header.startswith("MESH")
        for column in ("NAME", "STATUS", "LAST CONNECTED AGO", "TOTAL UPDATES", "NACKS", "NOTES"):
            assert column in header
        assert row.split()[:2] == ["payments", "web-1"]
        assert "Offline" in row and "never connected" in row

        zones = lines(zonemesh("inspect", "zones", cp_url=server.url).stdout)
        assert zones == [
            "NAME   STATUS   LAST CONNECTED AGO   TOTAL UPDATES   TOTAL ERRORS   ZONE-CP VERSION"
        ]
        as_json = json.loads(
            zonemesh("inspect", "zoneingresses", "-o", "json", cp_url=server.url).stdout
        )
        assert as_json == {"items": [], "total": 0}
        wrong = zonemesh("inspect", "meshes", cp_url=server.url)
        assert wrong.returncode == 1 and "cannot inspect" in wrong.stderr
    finally:
        server.stop()


ROUTE_YAML = """\
type: MeshHTTPRoute
name: canary
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
  - targetRef: {kind: MeshMultiZoneService, name: echo}
    rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      default:
        backendRefs: [{kind: MeshService, name: echo-v2, port: 1027}]
"""


def test_apply_and_get_meshhttproutes(cp: ThreadedCp) -> None:
    applied = zonemesh("apply", "-f", "-", cp_url=cp.url, stdin=ROUTE_YAML)
    assert (
        applied.stdout.strip()
        == 'resource type="MeshHTTPRoute" mesh="default" name="canary" Created'
    )
    header, row = lines(zonemesh("get", "meshhttproutes", cp_url=cp.url).stdout)
    assert header.split() == ["MESH", "NAME", "TARGETREF", "TO", "AGE"]
    assert row.split()[:4] == ["default", "canary", "Mesh", "MeshMultiZoneService/echo"]
    bad = ROUTE_YAML.replace("value: /api", "value: /api/")
    refused = zonemesh("apply", "-f", "-", cp_url=cp.url, stdin=bad.replace("canary", "other"))
    assert refused.returncode == 1
    assert "spec.to[0].rules[0].matches[0].path.value: does not need a trailing slash" in (
        refused.stderr
    )

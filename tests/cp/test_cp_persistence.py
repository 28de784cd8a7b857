"""A control plane on SQLite keeps its state across restarts, including `kill -9`."""

from __future__ import annotations

from pathlib import Path

from support.processes import CpProcess, wait_for

MMZS = {
    "type": "MeshMultiZoneService",
    "name": "echo",
    "mesh": "default",
    "spec": {
        "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "echo"}}},
        "ports": [{"port": 1027, "appProtocol": "http"}],
    },
}


def dataplane(name: str, service: str, address: str) -> dict[str, object]:
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": name,
        "networking": {
            "address": address,
            "inbound": [{"port": 21027, "servicePort": 1027, "tags": {"kuma.io/service": service}}],
        },
    }


def vips(cp: CpProcess, path: str) -> list[str]:
    response = cp.api("GET", path)
    if response.status_code != 200:
        return []
    return [v["ip"] for v in (response.json().get("status") or {}).get("vips", [])]


def test_state_and_vips_survive_kill_9(tmp_path: Path) -> None:
    cp = CpProcess(tmp_path).start()
    try:
        assert (
            cp.api("PUT", "/meshes/default/meshmultizoneservices/echo", json=MMZS).status_code
            == 201
        )
        for name, service, address in [
            ("echo-a", "echo", "127.0.1.11"),
            ("web-a", "web", "127.0.1.12"),
        ]:
            assert (
                cp.api(
                    "PUT",
                    f"/meshes/default/dataplanes/{name}",
                    json=dataplane(name, service, address),
                ).status_code
                == 201
            )
        mmzs_vip = wait_for(
            lambda: vips(cp, "/meshes/default/meshmultizoneservices/echo"), message="MMZS VIP"
        )
        echo_vip = wait_for(
            lambda: vips(cp, "/meshes/default/meshservices/echo"), message="echo VIP"
        )
        web_vip = wait_for(lambda: vips(cp, "/meshes/default/meshservices/web"), message="web VIP")
        assert mmzs_vip[0].startswith("243.") and echo_vip[0].startswith("241.")

        cp.kill()
        cp.start()

        assert vips(cp, "/meshes/default/meshmultizoneservices/echo") == mmzs_vip
        assert vips(cp, "/meshes/default/meshservices/echo") == echo_vip
        # A freed VIP is not handed out again: delete web, add api, api gets a new address.
        assert cp.api("DELETE", "/meshes/default/dataplanes/web-a").status_code == 200
        wait_for(lambda: cp.api("GET", "/meshes/default/meshservices/web").status_code == 404)
        assert (
            cp.api(
                "PUT",
                "/meshes/default/dataplanes/api-a",
                json=dataplane("api-a", "api", "127.0.1.13"),
            ).status_code
            == 201
        )
        api_vip = wait_for(lambda: vips(cp, "/meshes/default/meshservices/api"), message="api VIP")
        assert api_vip != web_vip and api_vip != echo_vip
    finally:
        assert cp.terminate() == 0


def test_second_control_plane_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = CpProcess(tmp_path, name="first").start()
    try:
        second = CpProcess(tmp_path, name="second")
        second.data_dir = first.data_dir
        second.args[second.args.index("--data-dir") + 1] = str(first.data_dir)
        second.start(wait=False)
        assert second.proc is not None
        assert second.proc.wait(timeout=30) != 0
        assert "in use by another zonemesh control plane" in second.log.read_text()
        assert "Traceback" not in second.log.read_text()
    finally:
        assert first.terminate() == 0

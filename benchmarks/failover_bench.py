"""Leader failover of two `zonemesh cp run` instances of one zone on one PostgreSQL.

Each round starts two instances (`a` first, so it leads), SIGKILLs the leader, and measures
(1) SIGKILL -> the survivor's `GET /` says `"leader": true` and (2) SIGKILL -> a Dataplane
created on the survivor right after the kill has its generated MeshService with a VIP (computed
state resumed). Prints p50 and max over the rounds.

Run: `.venv/bin/python benchmarks/failover_bench.py [ROUNDS]` (default 5). PostgreSQL: as in
`store_bench.py` (the `KUMA_STORE_POSTGRES_*` server when KUMA_STORE_TYPE=postgres, else a
throwaway one from Debian's postgresql package). Real processes with TLS, on loopback.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "store"), str(ROOT / "benchmarks")]

from replicas_helpers import dataplane, is_leader, put, vip_of  # noqa: E402
from store_bench import postgres_database  # noqa: E402
from support.processes import CpProcess, wait_for  # noqa: E402


def env_of(config: object) -> dict[str, str]:
    pg = config  # a PostgresConfig
    return {
        "KUMA_STORE_TYPE": "postgres",
        "KUMA_STORE_POSTGRES_HOST": pg.host,  # type: ignore[attr-defined]
        "KUMA_STORE_POSTGRES_PORT": str(pg.port),  # type: ignore[attr-defined]
        "KUMA_STORE_POSTGRES_USER": pg.user,  # type: ignore[attr-defined]
        "KUMA_STORE_POSTGRES_PASSWORD": pg.password.get_secret_value(),  # type: ignore[attr-defined]
        "KUMA_STORE_POSTGRES_DB_NAME": pg.db_name,  # type: ignore[attr-defined]
    }


def one_round(workdir: Path, env: dict[str, str], n: int) -> tuple[float, float]:
    a = CpProcess(workdir, name=f"a{n}", store="postgres", env=env)
    b = CpProcess(workdir, name=f"b{n}", store="postgres", env=env)
    try:
        a.start()
        wait_for(lambda: is_leader(a), timeout=10)
        b.start()
        a.kill()
        killed = time.monotonic()
        wait_for(lambda: is_leader(b), timeout=30, interval=0.01)
        leads = time.monotonic() - killed
        name = f"after-kill-{n}"
        put(b, f"/meshes/default/dataplanes/{name}", dataplane(name, name))
        wait_for(lambda: vip_of(b, name) is not None, timeout=30, interval=0.01)
        return leads, time.monotonic() - killed
    finally:
        b.kill()
        a.kill()


def main(rounds: int) -> None:
    with postgres_database() as config, tempfile.TemporaryDirectory() as tmp:
        env = env_of(config)
        results = [one_round(Path(tmp), env, n) for n in range(rounds)]
    for label, values in (
        ("SIGKILL -> new leader", [r[0] for r in results]),
        ("SIGKILL -> new MeshService", [r[1] for r in results]),
    ):
        print(
            f"{label:<28} p50 {statistics.median(values) * 1000:7.0f} ms"
            f"   max {max(values) * 1000:7.0f} ms   ({rounds} rounds)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)

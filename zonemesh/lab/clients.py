"""Clients an app in a lab namespace runs: they call the mesh the seed's way, by hostname,
through the system resolver and the transparent proxy. Standard library only (they start
often, inside namespaces): `python -m zonemesh.lab.clients http URL`, `tcp HOST PORT`, or
`load http|tcp TARGET --interval S`, which prints one JSON line per request until killed.

Every line: {"at": CLOCK_MONOTONIC at send, "ok", "zone", "instance", "error"}; the monotonic
clock is the same for every process of the machine, whatever its namespace.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
import urllib.parse
from typing import Any

TIMEOUT_S = 2.0


def _answer(at: float, body: bytes | None, error: str = "") -> dict[str, Any]:
    if body is None:
        return {"at": at, "ok": False, "error": error}
    try:
        data = json.loads(body)
        return {"at": at, "ok": True, "zone": str(data["zone"]), "instance": str(data["instance"])}
    except (ValueError, KeyError, TypeError):
        return {"at": at, "ok": False, "error": f"not an echo answer: {body[:120]!r}"}


def ask_http(url: str) -> dict[str, Any]:
    """GET `url` on a new connection (the name resolved anew)."""
    at = time.monotonic()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=TIMEOUT_S)
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return _answer(at, None, f"HTTP {response.status}: {body[:120]!r}")
        return _answer(at, body)
    except (OSError, http.client.HTTPException) as e:
        return _answer(at, None, f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def ask_tcp(host: str, port: int) -> dict[str, Any]:
    """A raw TCP exchange: write an HTTP/1.1 request as bytes, read to the end."""
    at = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
            request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as e:
        return _answer(at, None, f"{type(e).__name__}: {e}")
    data = b"".join(chunks)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 200"):
        return _answer(at, None, f"unexpected answer: {data[:120]!r}")
    return _answer(at, body)


def _once(kind: str, target: str) -> dict[str, Any]:
    if kind == "http":
        return ask_http(target)
    host, _, port = target.rpartition(":")
    return ask_tcp(host, int(port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonemesh.lab.clients")
    sub = parser.add_subparsers(dest="command", required=True)
    one_http = sub.add_parser("http")
    one_http.add_argument("url")
    one_tcp = sub.add_parser("tcp")
    one_tcp.add_argument("host")
    one_tcp.add_argument("port", type=int)
    load = sub.add_parser("load")
    load.add_argument("kind", choices=["http", "tcp"])
    load.add_argument("target", help="URL (http) or HOST:PORT (tcp)")
    load.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    if args.command == "http":
        answer = ask_http(args.url)
    elif args.command == "tcp":
        answer = ask_tcp(args.host, args.port)
    else:
        while True:  # until killed; bounded by whoever started it
            print(json.dumps(_once(args.kind, args.target)), flush=True)
            time.sleep(args.interval)
    print(json.dumps(answer))
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

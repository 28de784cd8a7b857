"""The compose demo's client: calls `echo` through its sidecar and prints which zone answered.

It runs in the zonemesh image with the standard library only. Every `--interval` seconds it
GETs `--target` (the sidecar's outbound to the MeshMultiZoneService `echo`), reads the echo
app's JSON answer and prints one line such as

    client-z1: zone1 answered (instance echo-z1-b)   [zone1=12 zone2=0]

With `--listen HOST:PORT` it also answers HTTP there, so the client's own inbound (and the
readiness probe of its sidecar) has an app behind it. SIGTERM stops it with exit code 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


def ask(url: str, timeout: float) -> tuple[str, str]:
    """(zone, instance) from one echo answer; raises OSError or ValueError when there is none."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read().decode())
    if not isinstance(body, dict) or "zone" not in body:
        raise ValueError(f"not an echo answer: {str(body)[:80]}")
    return str(body["zone"]), str(body.get("instance", "?"))


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{self.server.client_name} is up\n".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # probes every second: quiet
        pass


def serve(listen: str, name: str) -> ThreadingHTTPServer:
    """Answer 200 on HOST:PORT in a background thread."""
    host, _, port = listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), _Hello)
    server.client_name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(name: str, target: str, interval: float, count: int, timeout: float) -> int:
    """Ask `count` times (0 = until stopped); exit code 0 if at least one answer came."""
    tally: Counter[str] = Counter()
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    asked = 0
    while not stop.is_set() and (count == 0 or asked < count):
        asked += 1
        try:
            zone, instance = ask(target, timeout)
        except (OSError, ValueError) as e:
            line = f"{name}: no answer from {target} yet ({_reason(e)})"
        else:
            tally[zone] += 1
            counts = " ".join(f"{z}={n}" for z, n in sorted(tally.items()))
            line = f"{name}: {zone} answered (instance {instance})   [{counts}]"
        print(line, flush=True)
        if count == 0 or asked < count:
            stop.wait(interval)
    return 0 if tally or count == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    """The command line: `--name`, `--target`, and optionally `--listen`, `--interval`, ..."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--name", required=True, help="printed at the start of every line")
    parser.add_argument("--target", required=True, help="URL of the sidecar's outbound")
    parser.add_argument("--listen", help="HOST:PORT to answer HTTP on (the client's inbound)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between requests")
    parser.add_argument("--count", type=int, default=0, help="requests to make (0 = forever)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = serve(args.listen, args.name) if args.listen else None
    try:
        return run(args.name, args.target, args.interval, args.count, args.timeout)
    finally:
        if server is not None:
            server.shutdown()


if __name__ == "__main__":
    sys.exit(main())

"""Issue each zone's KDS token on global and write it where that zone's CP reads it.

docker-compose.yml runs this once (service `zone-tokens`) in global's network namespace, so
its requests to global's API come from loopback, which global treats as admin; if global has
written its bootstrap admin token (`<data-dir>/admin-user-token`), that is sent as well, so
this keeps working where loopback is not admin. Each token lands in `<out>/<zone>` (mode
0600, replaced atomically), a volume the zone CP mounts read-only and names in
`KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH`. Standard library only.

    python zone_tokens.py --cp http://127.0.0.1:5681 --out /var/run/zonemesh-tokens \\
        --zone zone1 --zone zone2 [--valid-for 8760h] [--admin-token-file FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cp", required=True, help="global's API, e.g. http://127.0.0.1:5681")
    parser.add_argument("--out", required=True, help="directory for the token files")
    parser.add_argument("--zone", action="append", required=True, help="a zone (repeatable)")
    parser.add_argument("--valid-for", default="8760h", help="token lifetime (default 8760h)")
    parser.add_argument(
        "--admin-token-file", default="", help="sent as Authorization: Bearer when it exists"
    )
    return parser


def issue(cp: str, zone: str, valid_for: str, admin_token: str) -> str:
    body = json.dumps({"zone": zone, "scope": ["cp"], "validFor": valid_for}).encode()
    request = urllib.request.Request(
        f"{cp.rstrip('/')}/tokens/zone",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if admin_token:
        request.add_header("Authorization", f"Bearer {admin_token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode().strip()


def write_private(path: Path, text: str) -> None:
    """Mode 0600 from the start, and never half-written: the zone CP may be reading it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    admin = Path(args.admin_token_file) if args.admin_token_file else None
    admin_token = admin.read_text().strip() if admin is not None and admin.is_file() else ""
    for zone in args.zone:
        try:
            token = issue(args.cp, zone, args.valid_for, admin_token)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            print(f"zone-tokens: POST /tokens/zone for {zone}: {e.code} {detail}", file=sys.stderr)
            return 1
        except (urllib.error.URLError, OSError) as e:
            print(f"zone-tokens: {args.cp} does not answer: {e}", file=sys.stderr)
            return 1
        write_private(out / zone, token)
        print(f"zone-tokens: wrote {out / zone} (valid for {args.valid_for})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

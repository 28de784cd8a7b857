"""Regenerate `zonemesh/federation/proto/` from `protos/zonemesh/kds/v1/kds.proto`.

Run `python -m zonemesh.federation.gen_protos` after editing the .proto; the generated
modules are committed so that installing zonemesh needs no protoc. A test regenerates into a
temporary directory and fails when the committed modules are out of date.

protoc names Python modules after the .proto path (`zonemesh.kds.v1`); the modules live in
`zonemesh.federation.proto` instead, so the one cross-module import is rewritten.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "protos"
PROTO_FILE = Path("zonemesh/kds/v1/kds.proto")
OUT_DIR = Path(__file__).resolve().parent / "proto"
GENERATED = ("kds_pb2.py", "kds_pb2.pyi", "kds_pb2_grpc.py")
_PROTOC_PACKAGE = "zonemesh.kds.v1"
_PACKAGE = "zonemesh.federation.proto"


def generate() -> dict[str, str]:
    """Compile the .proto and return {file name: content} of the Python modules."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(PROTO_FILE),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_ROOT / PROTO_FILE}")
        out = Path(tmp) / PROTO_FILE.parent
        files = {}
        for name in GENERATED:
            text = (out / name).read_text()
            files[name] = text.replace(f"from {_PROTOC_PACKAGE} import", f"from {_PACKAGE} import")
        return files


def main() -> int:
    for name, text in generate().items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

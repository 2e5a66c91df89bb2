"""Regenerate the Python modules in src/rustbill/pb from proto/rustbill/pb/*.proto.

Run after editing a .proto file: ``python scripts/gen_proto.py``. The generated files are
committed; tests/test_proto.py fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "rustbill" / "pb"


def generate(out_dir: Path) -> list[Path]:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py under ``out_dir``/rustbill/pb."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(PROTO_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    (out_dir / "rustbill" / "pb").mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_dir / "rustbill" / "pb").glob("*_pb2*.py*"))


if __name__ == "__main__":
    files = generate(ROOT / "src")
    for f in files:
        print(f.relative_to(ROOT))
    sys.exit(0)

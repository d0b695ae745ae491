#!/usr/bin/env python3
"""Copy a wheelhouse and put a regressed build of the gateway in it, for the rollback drill.

    broken_gateway_wheel.py SOURCE_DIR DEST_DIR

The copy's gateway wheel keeps its name and version (new code, same number, as a real regression
arrives) but its chat endpoint raises: the service starts, /health/ready and /v1/models answer,
`vilms-gateway validate` passes, and only a chat completion fails (HTTP 500). The wheel's RECORD is
rewritten with the changed file's hash and size, as a wheel built from that code would carry.
Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import zipfile
from pathlib import Path

CHAT_MODULE = "gateway/resources/chat.py"
REGRESSION = b'''

# The rollback drill's regression (testbed/broken_gateway_wheel.py): every chat completion fails.
def _regressed_on_post(self, req, resp):  # type: ignore[no-untyped-def]
    raise RuntimeError("rollback drill: this build of the gateway cannot chat")


ChatResource.on_post = _regressed_on_post  # type: ignore[method-assign]
'''


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def break_wheel(source: Path, dest: Path) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as new:
        names = old.namelist()
        if CHAT_MODULE not in names:
            raise SystemExit(f"{source.name} has no {CHAT_MODULE}")
        chat = old.read(CHAT_MODULE) + REGRESSION
        for info in old.infolist():
            data = old.read(info)
            if info.filename == CHAT_MODULE:
                data = chat
            elif info.filename.endswith(".dist-info/RECORD"):
                lines = [record_line(CHAT_MODULE, chat) if line.startswith(CHAT_MODULE + ",") else line
                         for line in data.decode().splitlines()]
                data = ("\n".join(lines) + "\n").encode()
            new.writestr(info, data)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source_dir, dest_dir = Path(argv[1]), Path(argv[2])
    gateway_wheels = sorted(source_dir.glob("vilms_edge_gateway-*.whl"), key=lambda p: p.stat().st_mtime)
    if not gateway_wheels:
        print(f"no gateway wheel in {source_dir}", file=sys.stderr)
        return 1
    shutil.rmtree(dest_dir, ignore_errors=True)
    dest_dir.mkdir(parents=True)
    for wheel in source_dir.glob("*.whl"):
        if wheel not in gateway_wheels:
            # The dependencies are the same files: a link, not a copy of torch.
            (dest_dir / wheel.name).hardlink_to(wheel)
    break_wheel(gateway_wheels[-1], dest_dir / gateway_wheels[-1].name)
    print(dest_dir / gateway_wheels[-1].name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""``client-js/src/codes.ts`` mirrors ``hub/codes.py`` (docs/protocol.md §3): same names, same numbers.

The client may add codes that never cross the wire (a browser's own 1006), listed here;
every code the hub can send must be in the client, under the same name.
"""

from __future__ import annotations

import re
from pathlib import Path

from hub.codes import CloseCode

CODES_TS = Path(__file__).resolve().parent.parent / "client-js" / "src" / "codes.ts"
#: Codes only the client knows: RFC 6455 says 1006 is never sent in a close frame.
CLIENT_ONLY = {"ABNORMAL": 1006}


def client_codes() -> dict[str, int]:
    """The ``CloseCode`` object of codes.ts as name → number."""
    source = CODES_TS.read_text()
    body = re.search(r"export const CloseCode = \{(.*?)\} as const;", source, re.S)
    assert body is not None, f"expected `export const CloseCode = {{ … }} as const;` in {CODES_TS}"
    without_comments = re.sub(r"/\*.*?\*/|//[^\n]*", "", body.group(1), flags=re.S)
    entries = [e.strip() for e in without_comments.split(",") if e.strip()]
    codes: dict[str, int] = {}
    for entry in entries:
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)\s*:\s*(\d+)", entry)
        assert match is not None, f"expected NAME: number in codes.ts, got {entry!r}"
        codes[match[1]] = int(match[2])
    return codes


def test_client_codes_mirror_the_hub() -> None:
    hub = {code.name: int(code) for code in CloseCode}
    client = client_codes()
    assert {name: client.get(name) for name in hub} == hub, "a hub code is missing or different in codes.ts"
    extra = {name: number for name, number in client.items() if name not in hub}
    assert extra == CLIENT_ONLY, "codes.ts has codes the hub does not define (add them to hub/codes.py)"
    assert len(set(client.values())) == len(client), "two names for one number in codes.ts"

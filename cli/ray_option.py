"""`--ray [ADDRESS]`: an option whose value may be left out.

Typer's parser has no options with an optional value, so the command line is normalised
before parsing: a `--ray` not followed by something that looks like a Ray address gets
the value `local` (start a local Ray instance). Paths are never taken for addresses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

RAY_OPTION = "--ray"
_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")


def looks_like_address(text: str) -> bool:
    return bool(_ADDRESS.match(text))


def normalise_ray_flag(argv: Sequence[str]) -> list[str]:
    """Insert `local` after each bare `--ray`; `--ray=ADDR` and `--ray ADDR` are kept."""
    out: list[str] = []
    for position, arg in enumerate(argv):
        out.append(arg)
        if arg == "--":
            out.extend(argv[position + 1:])
            break
        if arg == RAY_OPTION:
            following = argv[position + 1] if position + 1 < len(argv) else None
            if following is None or not looks_like_address(following):
                out.append("local")
    return out

"""Sum ``py-spy record -f raw`` output (collapsed stacks): the top functions by own and total time.

Usage: ``python -m bench.flame FILE [--top N]``. Each line of the file is
``frame;frame;…;frame COUNT``; a frame's *own* share counts the samples where it is the
innermost frame, its *total* share those where it is anywhere on the stack (once each).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_NUMBER = re.compile(r":\d+\)?$")


def _frame(raw: str) -> str:
    """``function (path:line)`` without the line number, the path shortened to its package."""
    name = _NUMBER.sub(")", raw.strip())
    for marker in ("site-packages/", "/hub/", "/lib/python3"):
        if marker in name:
            head, _, tail = name.partition("(")
            tail = tail.split(marker, 1)[-1] if marker != "/hub/" else "hub/" + tail.split(marker, 1)[-1]
            name = f"{head}({tail}"
            break
    return name


def summarize(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, own counts, total counts) of one collapsed-stack file."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        frames = [_frame(f) for f in match.group(1).split(";") if f]
        count = int(match.group(2))
        samples += count
        if frames:
            own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    return samples, own, total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.flame", description=__doc__)
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    samples, own, total = summarize(args.file)
    print(f"{samples} samples")
    print("own %  | function")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / samples:5.1f}  | {name}")
    print("total % | function")
    for name, n in total.most_common(args.top * 2):
        print(f"{100 * n / samples:5.1f}   | {name}")


if __name__ == "__main__":
    main()

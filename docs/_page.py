"""Shared command line of the page generators (``gen_api.py``, ``gen_cli.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable


def generate(output: Path, render: Callable[[], str], script: str, argv: list[str] | None = None) -> int:
    """Write ``render()`` to ``output``; with ``--check`` only compare (exit status 1 if out of date)."""
    p = argparse.ArgumentParser(description=f"generate docs/{output.name}")
    p.add_argument("--check", action="store_true", help=f"exit 1 if docs/{output.name} is out of date")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if not output.exists() or output.read_text(encoding="utf-8") != text:
            print(f"{output} is out of date: run python docs/{script}", file=sys.stderr)
            return 1
        return 0
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0

"""``python -m clipsearch.train ...`` runs ``clipsearch train ...`` (one training command line).

``--shards A.tar B.tar`` (one flag, several files) is accepted too and passed on as
``--shards A.tar --shards B.tar``.
"""

from __future__ import annotations

import sys


def shards_repeated(args: list[str]) -> list[str]:
    """``--shards A B --lr 1e-4`` -> ``--shards A --shards B --lr 1e-4``."""
    out: list[str] = []
    in_shards = False
    for arg in args:
        if arg == "--shards":
            in_shards = True
            out.append(arg)  # with no file after it, click reports the missing value
            continue
        if in_shards and not arg.startswith("-"):
            if out[-1] != "--shards":
                out.append("--shards")
            out.append(arg)
            continue
        in_shards = False
        out.append(arg)
    return out


if __name__ == "__main__":
    from clipsearch.cli.app import main

    sys.exit(main(["train", *shards_repeated(sys.argv[1:])]))

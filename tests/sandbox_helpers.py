"""Helpers shared by the sandbox test files: sources to mount and a look at the host's processes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def make_sources(root: Path) -> Path:
    """A CSV and a SQLite database under `root/sources`."""
    src = root / "sources"
    src.mkdir()
    (src / "sales.csv").write_text("region,amount\nnorth,10\nsouth,32\n")
    con = sqlite3.connect(src / "shop.sqlite")
    con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    con.executemany("INSERT INTO orders (total) VALUES (?)", [(1.5,), (2.5,), (4.0,)])
    con.commit()
    con.close()
    return src


def host_processes_with(needle: str) -> list[int]:
    """The pids of this machine's processes whose command line holds `needle`."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"{entry.path}/cmdline", "rb") as fh:
                    if needle.encode() in fh.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found

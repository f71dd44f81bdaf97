"""One process racing others to use one approval: opens the Tether at ``argv[1]`` (home)
on ``argv[2]`` (database URL), waits until the file ``argv[5]`` exists, then tries to
consume approval ``argv[3]`` for digest ``argv[4]`` in a write transaction (as the
gateway does with the decision it allows) and prints ``won`` or ``lost`` (after
``ready``, once it is open and waiting)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tether.audit.record import Entry
from tether.config import Settings
from tether.core import Tether


def main() -> None:
    home, url, approval, digest, go = sys.argv[1:6]
    with Tether.open(Settings.load(Path(home), db_url=url)) as tether:
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        while not Path(go).exists():  # start together
            if time.monotonic() > deadline:
                raise SystemExit("never told to go")
            time.sleep(0.001)
        with tether.store.write() as conn:
            won = tether.approvals.consume(conn, approval, digest)
            if won:
                tether.events.append(conn, Entry.of("test.consumed", actor="racer"))
        print("won" if won else "lost", flush=True)


if __name__ == "__main__":
    main()

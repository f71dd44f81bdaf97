"""One gateway process racing others to use one approval: opens the Tether of
``TETHER_HOME`` / ``TETHER_DB``, says ``ready``, waits until the file ``argv[4]`` exists,
then judges a ``tools/call`` of ``rec/record`` (the pinned definition ``argv[3]``, JSON)
with the agent token ``argv[1]`` and the arguments ``argv[2]`` (JSON) exactly as the
gateway does before forwarding, and prints ``allowed``, ``held`` or ``refused: REASON``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tether.config import Settings
from tether.core import Tether
from tether.gateway.enforce import Gateway, Held, Refused


def main() -> None:
    token, args, tool, go = (
        sys.argv[1],
        json.loads(sys.argv[2]),
        json.loads(sys.argv[3]),
        sys.argv[4],
    )
    with Tether.open(Settings.from_env()) as tether:
        gate = Gateway(tether, "rec")
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        while not Path(go).exists():  # start together
            if time.monotonic() > deadline:
                raise SystemExit("never told to go")
            time.sleep(0.001)
        try:
            gate._judge(token, "tool", "record", [tool], args)
        except Held:
            print("held", flush=True)
        except Refused as refused:
            print(f"refused: {refused.reason}", flush=True)
        else:
            print("allowed", flush=True)


if __name__ == "__main__":
    main()

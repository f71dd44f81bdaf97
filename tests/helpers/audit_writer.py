"""A process that writes to the audit log, for tests/test_audit_durability.py.

Run with ``TETHER_HOME`` and ``TETHER_DB`` naming an initialised store::

    audit_writer.py crash TAG THREADS              THREADS threads append until killed
    audit_writer.py append TAG THREADS OPS GO      THREADS threads x OPS appends, once GO exists
    audit_writer.py checkpoints STOP               sign checkpoints until STOP exists

Every line goes to stdout, flushed, and only after the call it reports on returned (so
after its commit): ``ready`` once the store is open, ``ack SEQ NONCE`` per acknowledged
event (``detail.nonce`` of event SEQ is NONCE), ``agent NAME`` per acknowledged agent
registration, ``checkpoint SIZE`` per checkpoint made, ``error ...`` per failed call,
``commits N`` and ``done`` at the end of a finite run.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from tether import AgentSpec, Caller, Settings, Tether, generate_key_pair
from tether.audit.record import Entry

ADMIN = Caller.admin()
_lock = threading.Lock()


def say(line: str) -> None:
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def entry(tag: str, nonce: str) -> Entry:
    return Entry.of(
        "test.append", actor=f"writer:{tag}", subject=f"writer:{tag}", detail={"nonce": nonce}
    )


def one(tether: Tether, tag: str, nonce: str) -> None:
    [seq] = tether.events.record(
        Entry.of(
            "test.append", actor=f"writer:{tag}", subject=f"writer:{tag}", detail={"nonce": nonce}
        )
    )
    say(f"ack {seq} {nonce}")


def batch(tether: Tether, tag: str, nonces: list[str]) -> None:
    seqs = tether.events.record(*[entry(tag, nonce) for nonce in nonces])
    for seq, nonce in zip(seqs, nonces, strict=True):
        say(f"ack {seq} {nonce}")


def crash(tether: Tether, tag: str, threads: int) -> None:
    """``threads`` threads, each making record(), record() of several and agent registrations in
    turn, until SIGKILL."""
    workers = [
        threading.Thread(target=crash_loop, args=(tether, f"{tag}-{t}"), daemon=True)
        for t in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def crash_loop(tether: Tether, tag: str) -> None:
    i = 0
    while True:
        kind = i % 3
        if kind == 0:
            one(tether, tag, f"{tag}.{i}")
        elif kind == 1:
            batch(tether, tag, [f"{tag}.{i}.{k}" for k in range(2 + i % 4)])
        else:
            name = f"{tag}-a{i}"
            key = generate_key_pair().public_key
            tether.registry.register(
                ADMIN, AgentSpec(name=name, owner="alice@example.com", public_key=key)
            )
            say(f"agent {name}")
        i += 1


def append(tether: Tether, tag: str, threads: int, ops: int, go: Path) -> None:
    """``threads`` threads, each ``ops`` calls alternating record() and record() of several."""
    commits: list[int] = []
    tether.events.on_commit(commits.append)

    def work(t: int) -> None:
        for i in range(ops):
            nonce = f"{tag}.{t}.{i}"
            try:
                if i % 2 == 0:
                    one(tether, tag, nonce)
                else:
                    batch(tether, tag, [f"{nonce}.{k}" for k in range(1 + i % 4)])
            except Exception as exc:
                say(f"error {type(exc).__name__}: {exc}")

    while not go.exists():
        time.sleep(0.01)
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    say(f"commits {len(commits)}")


def checkpoints(tether: Tether, stop: Path) -> None:
    while not stop.exists():
        try:
            made = tether.checkpoints.make()
        except Exception as exc:
            say(f"error {type(exc).__name__}: {exc}")
        else:
            say(f"checkpoint {made.size}")
        time.sleep(0.02)


def main(argv: list[str]) -> None:
    mode, *args = argv
    with Tether.open(Settings.from_env()) as tether:
        say("ready")
        if mode == "crash":
            crash(tether, args[0], int(args[1]))
        elif mode == "append":
            append(tether, args[0], int(args[1]), int(args[2]), Path(args[3]))
        elif mode == "checkpoints":
            checkpoints(tether, Path(args[0]))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    say("done")


if __name__ == "__main__":
    main(sys.argv[1:])

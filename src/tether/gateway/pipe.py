"""A :class:`~tether.gateway.wire.Wire` over a process's pipes: the MCP stdio transport.

The process is started in a session of its own (so its whole tree can be stopped) with
exactly the environment it is given; its stderr is the gateway's own, as the SDK's stdio
client leaves it. Messages are one JSON object per line each way. A reader task takes
each line the process writes: an answer goes to the request waiting for its id, a
server request is answered, a notification is logged. End of output, a line longer than
:data:`~tether.gateway.wire.MAX_FRAME`, a malformed line, an answer to no open request or
more than :data:`~tether.gateway.wire.MAX_SERVER_REQUESTS` requests of the server's own
still owed an answer (a server that floods) fails the connection (:meth:`Wire.fail`); so
does a write the process does not take in within :data:`~tether.gateway.wire.WRITE_TIMEOUT`
(a process that stopped reading). A write is never abandoned halfway: it completes, or
the connection fails. Closing follows the SDK and the spec: stdin is
closed, the process gets two seconds to exit, then its process group is terminated.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
from anyio.abc import ByteReceiveStream, Process, TaskGroup
from mcp.os.posix.utilities import terminate_posix_process_tree

from tether.gateway import jsonrpc
from tether.gateway.jsonrpc import Answer, Malformed, Request, WireError, shown
from tether.gateway.wire import (
    MAX_FRAME,
    MAX_SERVER_REQUESTS,
    REQUEST_TIMEOUT,
    WRITE_TIMEOUT,
    Wire,
)

__all__ = ["Pipe", "started"]

log = logging.getLogger("tether.gateway")

EXIT_GRACE = 2.0  # seconds a process has to exit once its stdin is closed (then: the kill)
_ABANDONED_MAX = 1024  # ids of given-up requests remembered (their late answers are dropped)
_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class _Waiter:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.answer: Answer | None = None


class Pipe(Wire):
    """JSON-RPC over ``process``'s stdin and stdout (use :func:`started`)."""

    def __init__(self, process: Process, group: TaskGroup, dead: anyio.Event, timeout: float):
        super().__init__(dead, timeout)
        self._process = process
        self._group = group
        self._lock = anyio.Lock()
        self._waiting: dict[int, _Waiter] = {}
        self._abandoned: dict[int, None] = {}
        self.write_timeout = WRITE_TIMEOUT
        self._writing: anyio.CancelScope | None = None  # the write under way
        self.owed = 0  # requests of the server's own not answered yet
        self.drained = anyio.Event()  # set once its output has ended (or broken)

    async def _exchange(self, request_id: int, method: str, frame: bytes) -> Answer:
        waiter = self._waiting[request_id] = _Waiter()
        try:
            await self._post(frame)
            await waiter.done.wait()
        finally:
            if self._waiting.pop(request_id, None) is not None:  # given up (or never sent)
                self._abandoned[request_id] = None
                if len(self._abandoned) > _ABANDONED_MAX:
                    del self._abandoned[next(iter(self._abandoned))]
        if waiter.answer is None:  # woken by a failure
            self._check()
        assert waiter.answer is not None
        return waiter.answer

    async def _post(self, frame: bytes) -> None:
        self._check()
        stdin = self._process.stdin
        assert stdin is not None
        try:
            async with self._lock:
                self._check()  # (it may have failed while this waited its turn)
                # whole or not at all: a cancelled caller does not cut a frame short; a
                # process that does not take it in fails the connection (as does fail())
                with anyio.CancelScope(shield=True) as scope:
                    scope.deadline = anyio.current_time() + self.write_timeout
                    self._writing = scope
                    try:
                        await stdin.send(frame + b"\n")
                    finally:
                        self._writing = None
                if scope.cancelled_caught:  # too slow, or ended by fail()
                    self._check()
                    why = f"the upstream did not read its input for {self.write_timeout:g} s"
                    raise self.fail(WireError(why))
        except _ERRORS as exc:
            why = f"writing to the upstream failed ({type(exc).__name__})"
            raise self.fail(WireError(why)) from None

    def fail(self, cause: WireError) -> WireError:
        super().fail(cause)
        if self._writing is not None:
            self._writing.cancel()
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.done.set()
        return cause

    async def read(self) -> None:
        """Deliver every line the process writes, until its output ends or fails; what
        it writes after a failure is read and dropped, until its output ends (so that it
        is not held up writing, and its pipe is closed)."""
        stdout = self._process.stdout
        assert stdout is not None
        try:
            await self._lines(stdout)
        except WireError as exc:
            self.fail(exc)
            with suppress(*_ERRORS):
                async for _ in stdout:
                    pass
        except Exception as exc:  # the pipe broke (or, logged, a fault of ours): done either way
            if not isinstance(exc, _ERRORS):
                log.exception("reading from the upstream failed")
            self.fail(WireError(f"reading from the upstream failed ({type(exc).__name__})"))
        finally:
            self.drained.set()

    async def _lines(self, stdout: ByteReceiveStream) -> None:
        """Deliver each line of ``stdout``; raises WireError (at its end, too)."""
        pending = bytearray()
        async for chunk in stdout:
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                line = chunk[start:end]
                if pending:
                    line, pending = bytes(pending + line), bytearray()
                start = end + 1
                if len(line) > MAX_FRAME:
                    raise Malformed(f"a line longer than {MAX_FRAME} bytes")
                if line.strip():
                    self._deliver(line)
            pending += chunk[start:]
            if len(pending) > MAX_FRAME:
                raise Malformed(f"a line longer than {MAX_FRAME} bytes")
        code = self._process.returncode
        ended = "" if code is None else f" (exit code {code})"
        raise WireError(f"the upstream closed its output{ended}")

    def _deliver(self, line: bytes) -> None:
        message = jsonrpc.parse(line)
        if isinstance(message, Answer):
            waiter = self._waiting.pop(message.id, None)  # type: ignore[arg-type]
            if waiter is not None:
                waiter.answer = message
                waiter.done.set()
            elif message.id in self._abandoned:
                del self._abandoned[message.id]
                log.debug("upstream answered request %s after it was given up", message.id)
            else:
                raise Malformed(f"an answer to no open request (id {shown(message.id, 40)})")
        elif isinstance(message, Request):
            if self.owed >= MAX_SERVER_REQUESTS:
                raise Malformed(
                    f"the upstream sent more than {MAX_SERVER_REQUESTS} requests of its own "
                    "without waiting for their answers"
                )
            self.owed += 1
            self._group.start_soon(self._reply, message)
        else:
            log.debug("upstream notification %s", shown(message.method))

    async def _reply(self, request: Request) -> None:
        try:
            with suppress(WireError):  # the failure is the connection's, already recorded
                await self._answer_request(request)
        finally:
            self.owed -= 1


@asynccontextmanager
async def started(
    argv: list[str], env: dict[str, str], *, dead: anyio.Event, timeout: float = REQUEST_TIMEOUT
) -> AsyncIterator[Pipe]:
    """``argv`` running with exactly ``env``, and the connection to it; stopped on exit."""
    process = await anyio.open_process(argv, env=env, stderr=sys.stderr, start_new_session=True)
    stopped = False
    try:
        async with anyio.create_task_group() as group:
            pipe = Pipe(process, group, dead, timeout)
            group.start_soon(pipe.read)  # which keeps draining its output while it stops
            try:
                yield pipe
            finally:
                pipe.fail(WireError("the connection was closed"))
                with anyio.CancelScope(shield=True):
                    await _stop(process, pipe.drained)
                stopped = True
                group.cancel_scope.cancel()
    finally:
        if not stopped:  # the reader never started
            with anyio.CancelScope(shield=True):
                await _stop(process)


async def _stop(process: Process, drained: anyio.Event | None = None) -> None:
    """Close stdin, give the process :data:`EXIT_GRACE` to exit, then end its group; and
    give the reader (``drained``) as long to read its output to the end."""
    assert process.stdin is not None
    assert process.stdout is not None
    with suppress(*_ERRORS):
        await process.stdin.aclose()
    if not await _exited(process, EXIT_GRACE):
        if sys.platform == "win32":  # pragma: no cover
            process.kill()
        else:
            await terminate_posix_process_tree(process, EXIT_GRACE)
        await _exited(process, EXIT_GRACE)
    if drained is not None:
        with anyio.move_on_after(EXIT_GRACE):
            await drained.wait()
    with suppress(*_ERRORS):
        await process.stdout.aclose()


async def _exited(process: Process, within: float) -> bool:
    """Whether ``process`` exited within ``within`` seconds (its return code is polled:
    waiting on it would also wait for pipes a child of it may still hold)."""
    with anyio.move_on_after(within):
        while process.returncode is None:
            await anyio.sleep(0.01)
    return process.returncode is not None

"""An MCP server over stdio that opens properly and then misbehaves on ``tools/call`` as
``argv[1]`` says, for the tests of the gateway's own upstream client.

Modes: ``garbage`` (a line that is not JSON), ``silent`` (never answers a call; answers it
late once the client cancels it, saying so in the next call's answer), ``wrong-id``,
``string-id`` (the right number, as text), ``exit`` (dies mid-call), ``chatty`` (sends a
notification and requests of its own first, and answers with what the client said to
them), ``duplicate-key``, ``nan``, ``surrogate``, ``long-line`` (a line with no end),
``no-content`` (a result without content), ``array`` (a JSON array), ``secret-error``
(an error answer quoting the ``API_SECRET`` it was given), ``old-version`` (answers
``initialize`` with a version nobody speaks), ``bad-listing`` (tools without names),
``endless-pages`` (a tool listing whose every page has a next one); ``cut-version``,
``cut-key``, ``cut-id`` (a protocol version, a duplicate key, an id that quote its
``API_SECRET`` where an error message would be cut); ``flood`` (20 000
``ping`` requests of its own, then it reads nothing more), ``deaf`` (reads nothing once
the connection is open).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

MODE = sys.argv[1]
cancelled: list[Any] = []  # request ids the client said it gave up on
held: list[Any] = []  # request ids never answered (silent)


def send(message: Any) -> None:
    sys.stdout.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
    sys.stdout.flush()


def answer(request_id: Any, result: Any) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": result})


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}], "isError": False}


def read() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    message: dict[str, Any] = json.loads(line)
    return message


def chatty(request_id: Any) -> None:
    send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info"}})
    asks = {
        "p": "ping",
        "r": "roots/list",
        "s": "sampling/createMessage",
        "e": "elicitation/create",
        "u": "unknown/method",
    }
    for ask_id, method in asks.items():
        send({"jsonrpc": "2.0", "id": ask_id, "method": method, "params": {}})
    said: dict[str, Any] = {}
    while len(said) < len(asks):
        message = read()
        said[message["id"]] = message.get("result", message.get("error"))
    answer(request_id, text(json.dumps(said)))


def stop_reading() -> None:
    while True:  # until it is stopped
        time.sleep(60)


def call(request_id: Any) -> None:
    quoted = {"id": request_id, "jsonrpc": "2.0"}
    if MODE == "garbage":
        send("this is not JSON")
    elif MODE == "silent":
        held.append(request_id)
    elif MODE == "wrong-id":
        answer(request_id + 1000, text("hi"))
    elif MODE == "string-id":
        answer(str(request_id), text("hi"))
    elif MODE == "exit":
        os._exit(3)
    elif MODE == "chatty":
        chatty(request_id)
    elif MODE == "duplicate-key":
        send(json.dumps(quoted)[:-1] + ', "result": {"content": [], "content": [1]}}')
    elif MODE == "nan":
        send(json.dumps(quoted)[:-1] + ', "result": {"content": [], "n": NaN}}')
    elif MODE == "surrogate":
        send(json.dumps(quoted)[:-1] + ', "result": {"content": [], "t": "\\ud800"}}')
    elif MODE == "long-line":
        sys.stdout.write("x" * 100_000)  # a line that does not end
        sys.stdout.flush()
    elif MODE == "no-content":
        answer(request_id, {"text": "hi"})
    elif MODE == "array":
        send(json.dumps([{**quoted, "result": text("hi")}]))
    elif MODE == "cut-key":  # a duplicate key, whose message is cut at 200
        key = json.dumps("k" * 170 + os.environ.get("API_SECRET", ""))
        send(json.dumps(quoted)[:-1] + f', "result": {{{key}: 1, {key}: 2}}}}')
    elif MODE == "cut-id":  # an answer to no open request, its id cut at 40
        answer("i" * 30 + os.environ.get("API_SECRET", ""), text("hi"))
    elif MODE == "flood":
        for n in range(20_000):
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": n, "method": "ping"}) + "\n")
        sys.stdout.flush()
        stop_reading()
    elif MODE == "secret-error":
        error = {"code": -32000, "message": f"cannot use {os.environ.get('API_SECRET')}"}
        send({**quoted, "error": error})


def main() -> None:
    while True:
        message = read()
        method, request_id = message.get("method"), message.get("id")
        if method == "initialize":
            version = {
                "old-version": "1999-01-01",
                "cut-version": "v" * 30 + os.environ.get("API_SECRET", ""),  # cut at 40
            }.get(MODE, "2025-06-18")
            answer(
                request_id,
                {
                    "protocolVersion": version,
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "hostile", "version": "1"},
                },
            )
        elif method == "notifications/initialized" and MODE == "deaf":
            stop_reading()
        elif method == "tools/list":
            tool: dict[str, Any] = {"name": "echo", "inputSchema": {"type": "object"}}
            if MODE == "nulls":  # fields sent as null, one inside the schema
                tool.update(description=None, inputSchema={"type": "object", "default": None})
            listing = {"tools": [{"title": "x"} if MODE == "bad-listing" else tool]}
            if MODE == "endless-pages":
                listing["nextCursor"] = "more"
            answer(request_id, listing)
        elif method == "tools/call":
            if cancelled:  # the answer says which requests were cancelled
                answer(request_id, text(f"cancelled: {cancelled}"))
            else:
                call(request_id)
        elif method == "notifications/cancelled":
            cancelled.append(message["params"]["requestId"])
            for late in held:  # now answered, too late
                answer(late, text("late"))
            held.clear()


if __name__ == "__main__":
    main()

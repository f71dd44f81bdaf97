"""``tether``: the root command, and the one place errors become messages and exit codes."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from tether.cli import (
    agent,
    alerts,
    approvals,
    audit,
    credential,
    detect,
    discover,
    egress,
    gateway,
    grant,
    output,
    owner,
    policy,
    proxy,
    server,
    token,
)
from tether.cli.authorize import authorize
from tether.cli.kill import kill
from tether.errors import TetherError

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="tether",
    help="Identity-first security for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(server.init)
app.command()(server.up)
app.command()(proxy.proxy)
app.add_typer(agent.app, name="agent")
app.add_typer(owner.app, name="owner")
app.add_typer(grant.app, name="grant")
app.add_typer(policy.app, name="policy")
app.add_typer(token.keys_app, name="keys")
app.add_typer(token.token_app, name="token")
app.add_typer(token.dev_app, name="dev")
app.add_typer(audit.app, name="audit")
app.add_typer(gateway.app, name="gateway")
app.add_typer(egress.app, name="egress")
app.add_typer(credential.app, name="credential")
app.add_typer(discover.app, name="discover")
app.add_typer(alerts.app, name="alerts")
app.add_typer(approvals.app, name="approvals")
app.add_typer(detect.app, name="detect")
app.command()(grant.review)
app.command()(authorize)
app.command()(kill)


def run(argv: list[str]) -> int:
    """Run one command; returns the exit code (0 ok, 1 error, 2 usage, 3 refused)."""
    as_json = "--json" in argv
    try:
        result = app(args=argv, prog_name="tether", standalone_mode=False)
    except TetherError as exc:
        output.error(exc.to_dict(), as_json=as_json)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        output.stderr.print("aborted")
        return 1
    except typer.TyperException as exc:  # usage errors: unknown command, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            output.stderr.print(f"error: {exc}")
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: say so in one line, never a traceback by default
        if os.environ.get("TETHER_DEBUG"):
            traceback.print_exc()
        output.error(
            {"error": "server_error", "error_description": f"internal error: {exc!r}"},
            as_json=as_json,
        )
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))

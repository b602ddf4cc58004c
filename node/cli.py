"""``mesh-node``: the command-line entry point (a click group).

Commands come from three modules, loaded only when needed:

* ``node.cli_keys`` (always): ``keygen``, ``org``, ``trust``, ``inspect``;
* ``node.cli_daemon`` (if present): ``run``, ``status``, ``peers``, ``reload``, ``tasks``,
  ``submit``, ``demo``, ``bench``;
* ``node.cli_sim`` (if present): ``simulate``, which imports ``simulations``
  inside the command so that ``node`` never imports it at import time.

A command module exposes its commands as ``COMMANDS`` (a sequence of
``click.Command``) or, failing that, as module-level ``click.Command`` objects
it defines. A missing module only means fewer commands; an error *inside* a
present module is not hidden.

Errors: a ``MeshError`` (bad input, unsafe file, rejected frame...) or an
``OSError`` reaching the top prints one line ``error: <message>`` on stderr,
never a traceback. Exit codes: 0 success, 1 failure (including a rejected
frame in ``inspect``), 2 usage or configuration error; 141 with no message
when the reader of stdout went away (``mesh-node tasks | head``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import click

from protocols.errors import ConfigError, LocalProtocolError, MeshError, first_line

__all__ = ["LAZY_COMMANDS", "MeshGroup", "main"]

#: Command name -> the module that defines it (imported on first use).
LAZY_COMMANDS: dict[str, str] = {
    "keygen": "node.cli_keys",
    "org": "node.cli_keys",
    "trust": "node.cli_keys",
    "inspect": "node.cli_keys",
    "run": "node.cli_daemon",
    "status": "node.cli_daemon",
    "peers": "node.cli_daemon",
    "reload": "node.cli_daemon",
    "tasks": "node.cli_daemon",
    "submit": "node.cli_daemon",
    "demo": "node.cli_daemon",
    "bench": "node.cli_daemon",
    "simulate": "node.cli_sim",
}
_MODULES: tuple[str, ...] = tuple(dict.fromkeys(LAZY_COMMANDS.values()))


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _commands_of(mod: ModuleType) -> dict[str, click.Command]:
    listed = getattr(mod, "COMMANDS", None)
    if listed is not None:
        cmds: Sequence[Any] = list(listed)
    else:
        cmds = [
            v
            for v in vars(mod).values()
            if isinstance(v, click.Command)
            and getattr(v.callback, "__module__", mod.__name__) == mod.__name__
        ]
    out: dict[str, click.Command] = {}
    for cmd in cmds:
        if not isinstance(cmd, click.Command) or not cmd.name:
            raise TypeError(f"{mod.__name__}.COMMANDS must hold named click commands")
        out[cmd.name] = cmd
    return out


class MeshGroup(click.Group):
    """A group that loads command modules lazily and prints ``MeshError`` as one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[str, dict[str, click.Command]] = {}

    def _load(self, module: str) -> dict[str, click.Command]:
        cmds = self._loaded.get(module)
        if cmds is None:
            cmds = _commands_of(importlib.import_module(module)) if _present(module) else {}
            self._loaded[module] = cmds
        return cmds

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        for module in _MODULES:
            names.update(self._load(module))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        module = LAZY_COMMANDS.get(cmd_name)
        if module is not None:
            found = self._load(module).get(cmd_name)
            if found is not None:
                return found
        for other in _MODULES:  # a command we do not know by name: look everywhere
            found = self._load(other).get(cmd_name)
            if found is not None:
                return found
        return None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, LocalProtocolError) as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except MeshError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except BrokenPipeError:
            # The reader went away (`mesh-node tasks | head`): stop quietly, as a
            # command killed by SIGPIPE does; no flush of the dead pipe at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(1)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            # A bug, not the user's input (that is a ConfigError above): one line, and
            # the traceback on request. Never a raw traceback in an operator's terminal.
            if os.environ.get("PARLEY_DEBUG"):
                raise
            first = first_line(exc, default="")
            click.echo(
                f"error: internal error ({type(exc).__name__}: {first}); "
                "run again with PARLEY_DEBUG=1 for the traceback, and please report it",
                err=True,
            )
            ctx.exit(1)


@click.group(cls=MeshGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="parley-mesh", prog_name="mesh-node")
def main() -> None:
    """Parley node: signed peer-to-peer discovery and contract-net bidding.

    \b
    Example (a key, an org, a certificate, a trust store):
      mesh-node keygen --out alpha.key
      mesh-node org init acme --out acme/
      mesh-node org issue --org acme/ --node-key alpha.key.pub --name alpha --out alpha.cert
      mesh-node trust add --store trust.toml acme/
    """

"""Command-line options for line outputs, shared by `main.py inspect` and `main.py station`."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import TextIO

from .outbox import OutboxError
from .outputs import LineOutputs

__all__ = ["STATION_SINK_WAIT_S", "add_outbox_arguments", "run_outbox_report", "add_sink_arguments", "open_outputs", "print_status", "close_outputs", "DEFAULT_SINK_WAIT_S", "OUTBOX_FILE"]

DEFAULT_SINK_WAIT_S = 30.0          # main.py inspect: a batch's end
STATION_SINK_WAIT_S = 5.0           # main.py station: a stop (SIGTERM) should not hang on an absent peer
OUTBOX_FILE = "line_outbox.sqlite"   # in the user data folder, when there is no results log to hold the outbox


def add_sink_arguments(p: argparse.ArgumentParser, wait_s: float = DEFAULT_SINK_WAIT_S) -> None:
    p.add_argument("--sink", action="append", default=[], metavar="URL",
                   help="send every result to this output (repeatable): mqtt://host:1883/topic, "
                        "http(s)://host/path, postgresql://user@host/db?table=T, modbus://0.0.0.0:1502?unit=1, "
                        "opcua://0.0.0.0:4840")
    p.add_argument("--station", default=None, metavar="NAME",
                   help="this station's name in every output (default: the host name)")
    p.add_argument("--outbox", type=Path, default=None, metavar="FILE",
                   help=f"SQLite file where results wait for their outputs (default: the results log, else "
                        f"{OUTBOX_FILE} in the user data folder)")
    p.add_argument("--sink-wait", type=float, default=wait_s, metavar="SECONDS",
                   help="at the end, wait this long for the outputs to take what is queued "
                        f"(default {wait_s:g}; what is left goes out at the next start)")


def add_outbox_arguments(p: argparse.ArgumentParser) -> None:
    """`main.py outputs`: what waits in an outbox, and rejected messages queued again."""
    p.add_argument("--outbox", type=Path, default=None, metavar="FILE",
                   help=f"the outbox: a results log or {OUTBOX_FILE} (default: the window's and the station's "
                        "results log in the user data folder)")
    p.add_argument("--retry-rejected", nargs="?", const="*", default=None, metavar="URL",
                   help="queue the rejected messages again (of one output, by its URL as listed; default all); "
                        "they go out at the next start of that output")


def run_outbox_report(args: argparse.Namespace, default: Path, out: TextIO, err: TextIO) -> int:
    """Print each output's queue (pending, sent, rejected, oldest pending, last error); exit code 0,
    or 2 when the outbox cannot be read. `default`: the outbox without --outbox."""
    from .outbox import Outbox

    args.outbox = args.outbox or default
    if not Path(args.outbox).is_file():
        print(f"error: {args.outbox}: no such outbox (give --outbox FILE: the results log or {OUTBOX_FILE})",
              file=err)
        return 2
    try:
        box = Outbox(args.outbox)
        if args.retry_rejected:
            sink = None if args.retry_rejected == "*" else args.retry_rejected
            print(f"{box.retry_rejected(sink)} rejected messages queued again", file=out)
        rows = box.summary()
        box.close()
    except OutboxError as e:
        print(f"error: {e}", file=err)
        return 2
    if not rows:
        print(f"{args.outbox}: no outputs have used this outbox", file=out)
    for row in rows:
        line = f"{row['sink']}: {row['pending']} pending, {row['sent']} sent, {row['rejected']} rejected"
        if row["oldest_pending"]:
            line += f"; oldest pending since {row['oldest_pending']}"
        if row["last_error"]:
            line += f"; last error: {' '.join(row['last_error'].split())}"
        print(line, file=out)
    return 0


def open_outputs(urls: list[str], outbox: Path, station: str | None, err: TextIO) -> LineOutputs | None:
    """Outputs started on `outbox`, or None after one error line naming the problem."""
    try:
        outputs = LineOutputs(urls, outbox, station=station or socket.gethostname(),
                              on_event=lambda level, text: print(f"{level}: {text}", file=err, flush=True))
        outputs.start()
    except (ValueError, OutboxError) as e:
        print(f"error: {e}", file=err)
        return None
    return outputs


def print_status(outputs: LineOutputs, out: TextIO) -> None:
    for status in outputs.status():
        print(f"output {status.line()}", file=out, flush=True)


def close_outputs(outputs: LineOutputs, wait_s: float, out: TextIO, err: TextIO) -> int:
    """Deliver for up to `wait_s` seconds, print each output's status, stop; returns how many
    messages are still queued (they stay in the outbox for the next start)."""
    outputs.drain(wait_s)
    print_status(outputs, out)
    left = sum(s.queued for s in outputs.status())
    if left:
        print(f"warning: {left} results wait in {outputs.outbox.path} for outputs that did not take them; "
              "they are sent at the next start with the same outputs", file=err)
    outputs.close()
    return left

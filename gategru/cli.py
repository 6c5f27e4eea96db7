"""The ``gategru`` command line: ``gategru demo`` trains a small model and draws its gates."""

from __future__ import annotations

import os

# TensorFlow reads this once, when it first logs: set it before anything imports it, and
# only as a default so a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_demo(args: argparse.Namespace) -> int:
    # Imported here so `gategru --help` and argument errors don't wait for TensorFlow.
    from gategru.demo import run_demo

    result = run_demo(out_dir=args.out, epochs=args.epochs, seed=args.seed, quiet=args.quiet)
    print(f"gates picture: {result['png']}")
    print(f"gates arrays:  {result['npz']}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gategru", description="A fused TensorFlow GRU that returns its gate activations."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="train a small GateGRU model on synthetic data and draw its gates",
        description="Train a GateGRU(32) on a synthetic memory task (10-20 s on a CPU), "
        "print its gate statistics and write DIR/gates.png and DIR/gates.npz.",
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        default="gategru_out",
        help="output directory (default: gategru_out)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=12,
        metavar="N",
        help="training epochs (default: 12)",
    )
    demo.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="print only where files went")
    demo.set_defaults(handler=_cmd_demo)

    # Further subcommands go here, each with set_defaults(handler=...), e.g. a future
    # `inspect` (draw the gates of a saved model on given inputs) as `_cmd_inspect`.
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (1 on errors, with a one-line message)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("gategru: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a CLI reports, it does not dump tracebacks on users
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"gategru {args.command}: error: {message}", file=sys.stderr)
        return 1

"""The ``gategru`` command line: ``gategru demo`` trains a small model and draws its gates;
``gategru inspect`` captures the gates of a saved model."""

from __future__ import annotations

import os

# TensorFlow reads this once, when it first logs: set it before anything imports it, and
# only as a default so a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402


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


@contextlib.contextmanager
def _quiet_native_startup() -> Iterator[None]:
    """TensorFlow's C++ side logs a few lines while it is imported, before it reads
    TF_CPP_MIN_LOG_LEVEL: hide them unless the user asked for TensorFlow's info logs."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("0", ""):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    except ImportError:
        pass  # reported, with its message, by whatever needs TensorFlow next
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    yield


def _cmd_inspect(args: argparse.Namespace) -> int:
    with _quiet_native_startup():
        from gategru.inspect_model import inspect_model

    inspect_model(
        args.model,
        args.inputs,
        args.out,
        plot=args.plot,
        batch_size=args.batch_size,
        sample=args.sample,
        dtype=args.dtype,
        progress=False if args.quiet else None,
        say=(lambda _: None) if args.quiet else print,
    )
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

    inspect = commands.add_parser(
        "inspect",
        help="capture the gates of every GRU layer of a saved model on given inputs",
        description="Load a saved Keras model, run INPUTS through it, and write the update, "
        "reset and candidate gates of every GRU layer (keras.layers.GRU or GateGRU, also "
        "inside Bidirectional) to an HDF5 file: dataset /<layer>/<gate> of shape (samples, "
        "timesteps, units), aligned with the input time axis. Prints a per-layer, per-gate "
        "summary (mean, std, fraction of steps saturated; masked steps left out). The "
        "model is not changed.",
    )
    inspect.add_argument("model", metavar="MODEL", help="the saved model (.keras or .h5)")
    inspect.add_argument(
        "inputs",
        metavar="INPUTS",
        help="a .npy array the model takes, (samples, timesteps, features) (or (samples, "
        "timesteps) for an Embedding); memory-mapped, so it may be larger than memory",
    )
    inspect.add_argument(
        "--out",
        metavar="FILE",
        default="gates.h5",
        help="the HDF5 file to write (default: gates.h5; replaced if it exists)",
    )
    inspect.add_argument(
        "--plot",
        metavar="PNG",
        help="also draw one sample's gates as heatmaps (PNG) and a per-unit saturation "
        "overview (PNG with _saturation before the suffix); with several GRU layers, one "
        "pair per layer with the layer's name added",
    )
    inspect.add_argument(
        "--batch-size",
        type=_positive_int,
        default=256,
        metavar="N",
        help="samples per forward pass (default: 256); memory use grows with it and with "
        "the number of timesteps",
    )
    inspect.add_argument(
        "--sample",
        type=int,
        default=0,
        metavar="K",
        help="the sample that --plot draws (default: 0)",
    )
    inspect.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="how the gates are stored (default: float32; float16 halves the file)",
    )
    inspect.add_argument("--quiet", action="store_true", help="print only errors")
    inspect.set_defaults(handler=_cmd_inspect)

    # Further subcommands go here, each with set_defaults(handler=...).
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

"""``python -m gategru``: the same command line as the ``gategru`` script."""

from gategru.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

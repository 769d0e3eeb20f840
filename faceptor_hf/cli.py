"""Kept so that ``python -m faceptor_hf.cli ...`` still works; the commands live in ``faceptor_hf.commands``."""

from .commands import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m faceptor_hf ...`` is ``faceptor-hf ...``."""

from .commands import main

raise SystemExit(main())

"""``python -m meshlib.upstream``."""

from meshlib.upstream.cli import main

raise SystemExit(main())

"""``python -m copart_hub``: the ``copart-hub`` command line."""

from .cli import main

raise SystemExit(main())

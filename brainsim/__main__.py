"""``python -m brainsim`` runs the ``brainsim`` command line (see :mod:`brainsim.cli`)."""

from .cli import main

raise SystemExit(main())

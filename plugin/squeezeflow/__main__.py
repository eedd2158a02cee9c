"""`python -m squeezeflow` runs the CLI."""

from squeezeflow.cli import main

raise SystemExit(main())

"""`python -m squeezeflow` runs the CLI."""

from squeezeflow.cli.commands import main

raise SystemExit(main())

"""Allows `python -m cadencia`."""

from cadencia.cli import main

raise SystemExit(main())

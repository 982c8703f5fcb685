"""`python -m consumer ...`: see consumer/cli.py."""

from consumer.cli import main

raise SystemExit(main())

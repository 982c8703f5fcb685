"""`python -m infra.aws ...`: see infra/aws/cli.py."""

from .cli import main

raise SystemExit(main())

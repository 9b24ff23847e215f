"""`python -m tcnsearch.cli`: the `tcnsearch` command."""

import sys

from tcnsearch.cli.app import main

sys.exit(main())

"""`python -m deploy.vastai`."""

import sys

from deploy.vastai.cli import main

sys.exit(main())

"""``python -m pytest_tokenguard check PATH``."""

import sys

from .cli import main

sys.exit(main())

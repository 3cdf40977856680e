"""``python -m pytest_tokenguard check PATH``."""

from .cli import run

run()

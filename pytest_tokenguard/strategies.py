"""``pytest_tokenguard.strategies`` as in 0.2: the same module as ``pytest_tokenguard.suite.strategies`` (moved in 0.3).

Importing this name binds the one module object, so ``import pytest_tokenguard.strategies`` and
``from pytest_tokenguard import strategies`` keep working for existing tests and scripts.
"""

import sys

from pytest_tokenguard.suite import strategies as _moved

sys.modules[__name__] = _moved

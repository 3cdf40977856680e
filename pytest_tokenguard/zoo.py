"""``pytest_tokenguard.zoo`` as in 0.2: the same module as ``pytest_tokenguard.suite.zoo`` (moved in 0.3).

Importing this name binds the one module object, so ``import pytest_tokenguard.zoo`` and
``from pytest_tokenguard import zoo`` keep working for existing tests and scripts.
"""

import sys

from pytest_tokenguard.suite import zoo as _moved

sys.modules[__name__] = _moved

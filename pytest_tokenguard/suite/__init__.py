"""The bundled regression suite; run it with ``pytest --tokenguard --pyargs pytest_tokenguard.suite``."""

"""Project-wide test configuration: pytester drives the plugin in-process."""

pytest_plugins = ("pytester",)

"""Every suite's fixtures come from one plugin module (one devstack for the whole run)."""

pytest_plugins = ["tests.plugin"]

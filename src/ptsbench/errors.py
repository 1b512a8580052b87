"""Errors a user can fix by changing a config knob."""


class ConfigError(ValueError):
    """Bad user input: the message names the knob and how to fix it."""

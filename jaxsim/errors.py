"""The error of bad user input (a config value, a CLI flag, a results directory).

The CLI prints its one-line message instead of a traceback. It has a module of its own so that
`jaxsim.config` and the cross-field rules of `jaxsim.consistency` can both raise it without
importing each other; `jaxsim.config.ConfigError` is the same class.
"""


class ConfigError(ValueError):
    """A bad config value; the message names the key and what is allowed."""

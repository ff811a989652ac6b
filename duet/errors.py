"""User-facing errors.

Every error a user can cause (bad config, missing port, unknown servo, corrupt dataset)
is a DuetError whose message is one line naming the thing and the fix. The CLI prints
such errors without a traceback; anything else is a bug and keeps its traceback.
"""


class DuetError(Exception):
    """An error the user can fix. str(err) is one line: what is wrong, where, and what to do."""


class ConfigError(DuetError):
    """A configuration value, file or override is invalid."""

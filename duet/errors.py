"""User-facing errors.

Every error a user can cause (bad config, missing port, unknown servo, corrupt dataset)
is a DuetError whose message is one line naming the thing and the fix. The CLI prints
such errors without a traceback; anything else is a bug and keeps its traceback.
"""


class DuetError(Exception):
    """An error the user can fix. str(err) is one line: what is wrong, where, and what to do."""

    def __init__(self, *args: object):
        # An error raised in a torch DataLoader worker comes back to the training process
        # re-created from "Caught X in DataLoader worker process N.\nOriginal Traceback ...\nX: message":
        # keep the one-line message.
        if len(args) == 1 and isinstance(args[0], str) and "\nOriginal Traceback" in args[0]:
            last = [ln for ln in args[0].splitlines() if ln.strip()][-1]
            head, sep, rest = last.partition(": ")
            args = (rest if sep and " " not in head else last,)
        super().__init__(*args)


class ConfigError(DuetError):
    """A configuration value, file or override is invalid."""

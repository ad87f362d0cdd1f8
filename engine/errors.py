"""Errors whose message is meant for the person using the app."""


class UserError(Exception):
    """A problem the user can fix (bad file, bad setting, wrong model). The message is shown as is."""

"""The one exception type for a user's mistake: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """Bad input from the user (a path, a flag, a file): what, where, what to do."""

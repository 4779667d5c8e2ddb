"""The one exception type for bad input: the CLI prints it as one line, exit code 2."""


class UserError(Exception):
    """A problem with what the user gave us (config, data, workdir), with its fix.

    The message is a single line that names the problem and says how to fix it.
    """

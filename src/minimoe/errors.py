"""One exception type for problems the user can fix; the CLI prints it as a single line."""


class MiniMoEError(ValueError):
    """A clear, user-facing error: bad input file, config/checkpoint mismatch, NaN loss, ..."""

"""The error every surface (predict, the API, the page) reports in one line: an input that is not
what it accepts."""


class InputError(ValueError):
    """An input that cannot be turned into digit pairs."""

"""The one exception type that means "the visitor asked for something we refuse"; the UI shows it
as ``gr.Error``. Anything else escaping a service is a bug."""


class UserInputError(ValueError):
    """Bad input from a visitor (or API caller), with a message written for them."""

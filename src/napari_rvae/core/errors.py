"""The one exception type for user mistakes.

Everything a user can get wrong (a missing file, a 3-D image, a patch size that
does not fit) raises :class:`InputError` with a sentence a microscopist can act
on. The CLI prints it without a traceback; the widgets show it as a
notification. Anything else escaping the core is a bug.
"""


class InputError(ValueError):
    """Bad input from the user, with a message meant to be read by them."""

"""The one exception type for problems a user can cause and fix."""


class UNetCellsError(ValueError):
    """Bad input or state that the user can fix; the message says what to do.

    Widgets show it as a napari notification, the CLI prints it as one line.
    """

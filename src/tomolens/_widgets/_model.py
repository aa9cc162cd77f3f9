"""The model chooser shared by widgets: a shipped model's name, or "model file…" + a path."""

from __future__ import annotations

from pathlib import Path

#: Choice of the model combo box meaning "use the file in the model-file field".
FROM_FILE = "model file…"


def chosen_model(choice: str, file_value, missing_message: str) -> str:
    """The model to load: the shipped name, or the chosen file when ``choice`` is :data:`FROM_FILE`.

    Raises
    ------
    ValueError
        ``missing_message`` when the file option is chosen but no file exists there.
    """
    if choice == FROM_FILE:
        path = Path(file_value)
        if not path.is_file():
            raise ValueError(missing_message)
        return str(path)
    return str(choice)

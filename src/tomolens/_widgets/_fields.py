"""Small layout helpers shared by the dock widgets: no field or message cut off."""

from __future__ import annotations

#: Widest a path field grows to fit its text (px); beyond it the field shows the end of the path.
MAX_PATH_FIELD_PX = 460


def show_whole_path(field, max_px: int = MAX_PATH_FIELD_PX) -> None:
    """Keep a path field (magicgui ``FileEdit`` or ``LineEdit``) at least as wide as its text.

    The width follows the text as it changes, up to ``max_px``; a longer path shows its end
    (the file name) rather than a cut-off middle such as ``tect_user.pt``.
    """
    line = getattr(field, "line_edit", field).native

    def fit(*_) -> None:
        text = line.text()
        margins = line.textMargins()
        width = line.fontMetrics().horizontalAdvance(text) + margins.left() + margins.right() + 16
        line.setMinimumWidth(min(width, max_px))
        line.setCursorPosition(len(text))
        line.setToolTip(f"{text}\n{field.tooltip or ''}".strip())

    line.textChanged.connect(fit)
    fit()

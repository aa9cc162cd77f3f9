"""Dock widgets: thin magicgui/Qt front-ends over the core functions."""

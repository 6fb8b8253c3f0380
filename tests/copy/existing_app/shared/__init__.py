"""The existing app's own shared code (the template's folder must not overwrite it)."""

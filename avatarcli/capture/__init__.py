"""``avatar capture``: an avatar of a person from their own video (see :mod:`avatarcli.capture.fit`)."""

"""Motion: the one :class:`~avatarcli.motion.motion.Motion` type, readers for the files users
have, and built-in motions generated from code."""

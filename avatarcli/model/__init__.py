"""The avatar itself: Gaussians, how they hang on a template, and the ``.avatar`` file."""

"""Measuring the generation machinery without diffusion weights: reference avatars, the
reference guidance, image metrics and reconstruction runs."""

"""avatarcli: animatable 3D Gaussian avatars from a text prompt, driven by motion files."""

__version__ = "0.1.0"

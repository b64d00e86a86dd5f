"""``avatar generate``: staged score distillation from a 2D diffusion model into an avatar.

:mod:`~avatarcli.generate.config` holds the recipes, :mod:`~avatarcli.generate.trainer` the
loop; conditions (ControlNet images) and guidance (score distillation) are subpackages.
"""

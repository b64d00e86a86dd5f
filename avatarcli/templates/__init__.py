"""Body models: the built-in mannequins, or a user's own SMPL-X / FLAME files.

:mod:`~avatarcli.templates.loading` finds and loads them (``load_template``);
:mod:`~avatarcli.templates.template` is the one interface every template answers (posing,
keypoints, landmarks); :mod:`~avatarcli.templates.mannequin` sculpts the built-in ones.
"""

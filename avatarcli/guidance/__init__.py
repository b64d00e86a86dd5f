"""Guidance: what tells the trainer how rendered views should change.

:class:`~avatarcli.guidance.diffusion.DiffusionGuidance` distils a Stable Diffusion model
(+ ControlNet) with SDS, NFSD or ASD; ``tiny_components`` builds small random models for
tests and offline smoke runs.
"""

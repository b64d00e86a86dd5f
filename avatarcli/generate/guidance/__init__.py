"""Guidance: what tells the trainer how rendered views should change (score distillation
from a diffusers Stable Diffusion + ControlNet, or random-weight networks for smoke runs)."""

"""Rendering Gaussians: the rasterizer (gsplat on CUDA, a PyTorch rasterizer elsewhere),
cameras and framing, and clips of frames driven by a motion."""

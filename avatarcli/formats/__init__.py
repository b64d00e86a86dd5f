"""Files other tools open: 3DGS .ply / .compressed.ply / .splat, glTF, and frames (PNG, .mp4, .gif)."""

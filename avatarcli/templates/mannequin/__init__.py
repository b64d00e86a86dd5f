"""The built-in mannequins: procedural head and body sculpted from signed distance fields,
meshed, skinned and written in the official FLAME / SMPL-X file layouts."""

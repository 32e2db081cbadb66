"""The base layer: units, errors, atomic file writes, tensors (Cartesian <-> spherical, rotations).

Nothing here imports from the rest of the package.
"""

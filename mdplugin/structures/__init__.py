"""Structures and data sets: extended-XYZ reading and writing, key and unit mapping, validation."""

"""Defect synthesizers. Each produces (image, mask) pairs from normal images of one category."""

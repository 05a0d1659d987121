"""panda: diffusion-synthesized defects for data-starved defect segmentation."""

__version__ = "0.1.0"

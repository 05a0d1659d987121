"""Diffusion side of PANDA: window-local denoisers (diffusers) and their training."""

"""Thin click commands, one per pipeline stage: parse params, call the library, write, log."""

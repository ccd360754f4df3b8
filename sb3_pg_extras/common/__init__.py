"""Pieces shared by the SB3 algorithms of pg-extras."""

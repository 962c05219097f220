"""Reusable network pieces shared by several backbones (discriminators, ...)."""

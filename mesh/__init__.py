"""Parley: mesh."""

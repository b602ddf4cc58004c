"""Parley: protocols."""

"""Parley: node."""

"""Parley: simulations."""

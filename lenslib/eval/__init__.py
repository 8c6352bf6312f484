"""Eval: see the modules in this package."""

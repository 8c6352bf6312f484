"""World: see the modules in this package."""

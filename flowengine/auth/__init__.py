"""Built-in authentication."""

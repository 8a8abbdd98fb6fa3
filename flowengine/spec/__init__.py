"""flowengine.spec."""

"""flowengine.store."""

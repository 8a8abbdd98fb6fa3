"""flowengine.messaging."""

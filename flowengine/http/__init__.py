"""flowengine.http."""

"""pytest plugin: fixtures for asserting on spans (see spanstore.testing)."""

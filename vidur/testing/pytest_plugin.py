"""pytest plugin shipped with vidur (fixtures for plugin authors)."""

"""Bundled search spaces (YAML); see README "Search spaces" for the schema."""

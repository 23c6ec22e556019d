"""Boards as data: one TOML per board in this folder, validated by one schema."""

"""Run folders: one writer each for atomic files, galleries.json, provenance, statistics,
tables and image files, shared by every command that writes results."""

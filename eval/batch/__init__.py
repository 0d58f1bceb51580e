"""Batch experiments: configs (TOML / YAML), resumable data-parallel runs, reports."""

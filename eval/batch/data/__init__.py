"""Prompt sets shipped with couplednoise (package data for `eval.prompt_sources`)."""

"""Presenting results: terminal tables and progress (more formats to come)."""

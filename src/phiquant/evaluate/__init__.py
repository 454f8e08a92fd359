"""Scoring artifacts against a reference on the same token windows."""

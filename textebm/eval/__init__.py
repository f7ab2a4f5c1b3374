"""Evaluation metrics and language-model tools."""

"""Experiments of many runs and what is shown of them: tables and figures."""

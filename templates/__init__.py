"""The Jinja2 templates and kernel files of the generated modules (package data)."""

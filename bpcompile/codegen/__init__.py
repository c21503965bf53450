"""Code generation: statements -> module text through the Jinja2 templates."""

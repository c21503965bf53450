"""Front ends: YAML specs, programs and layer specs (with recurrent cells) -> graph."""

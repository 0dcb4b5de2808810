"""Speed, measured in one run: the renderers (loader) and the KD paths (kd)."""

"""Package data: the built-in default configuration and the demo world's profiles."""

"""The HTTP edge (Litestar). Nothing imports it."""

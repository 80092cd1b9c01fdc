"""Technical primitives with no business meaning."""

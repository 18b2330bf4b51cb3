"""Local servers speaking each social platform's documented API (one module per platform)."""

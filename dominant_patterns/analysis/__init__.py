"""Analysis of patterns: metrics and their table, per-layer SSIM, downstream heads, the files a run leaves."""

"""Data: dataset builders (one registry), the embedded photos and photo pool, ImageNet layouts, the decoded-image
cache and the loaders."""

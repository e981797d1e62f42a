"""The library's base: errors, value checks, registries, devices, RNG states, losses, checkpoints, the
optimisation loops and pattern files. Imports nothing else of the package."""

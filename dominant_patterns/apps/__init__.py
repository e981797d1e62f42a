"""The Hydra entry points (one per ``python -m``): fit, evaluate, Figure 3/4 layers, Table 6 head transfer,
the dashboard. No app imports another."""

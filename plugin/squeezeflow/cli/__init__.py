"""The command line: argument parsing and exit codes (`commands`), `squeezeflow init` (`scaffold`),
the registry webhook receiver (`webhook`) and the per-command time split (`timings`).

The top layer: it may import every other package; nothing imports it.
"""

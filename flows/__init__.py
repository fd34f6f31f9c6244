"""Prefect flows and the `stepedit` command line (the top floor: nothing below imports it).

Installed as `stepedit_flows` (see pyproject.toml) so the generic directory name never shadows
another distribution's `flows` module.
"""

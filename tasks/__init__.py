"""Prefect tasks: thin wrappers that give stepedit_core's run steps retries, logs and names.

Installed as `stepedit_tasks` (see pyproject.toml) so the generic directory name never shadows
another distribution's `tasks` module.
"""

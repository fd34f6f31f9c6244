"""`stepedit ray status|stop`: the shared local Ray cluster that runs on the Ray executor start
and join (see local_ray.py)."""

from __future__ import annotations

import argparse

from stepedit_flows import keeper, local_ray


def add_ray_parser(sub: argparse._SubParsersAction) -> None:
    ray = sub.add_parser(
        "ray",
        help="the local Ray cluster runs on the Ray executor start and share (status: exit 1 "
        "when none runs; stop: its processes end, the next run starts a new one)",
    )
    ray.add_argument("action", choices=("status", "stop"))


def cmd_ray(args: argparse.Namespace) -> int:
    """status: 1 when none runs; stop: 0 whether or not one ran."""
    home = keeper.prefect_home()
    if args.action == "stop":
        state = local_ray.stop()
        print(f"Ray cluster stopped (keeper pid {state['pid']})" if state else "no cluster running")
        return 0
    state = local_ray.running()
    if state is None:
        print(f"no Ray cluster running for home {home}")
        return 1
    idle = float(state["idle_stop_s"])
    print(
        f"Ray cluster at {state['address']} (keeper pid {state['pid']}, home {home}; "
        f"stops after {idle:g} s without a run)"
    )
    return 0

"""The Ray executor's round channel: a small named actor that holds sealed round records until
the shard writer takes them (the channel's contract: lifecycle/round_handoff.py).

A run of the shards opens one (`RayDataExecutor.round_channel`) and kills it when the run ends,
also when it fails or is stopped; it is not detached either, so it goes with the driver if
the driver dies. It asks for no CPU: it only files and hands out records, and it holds them as
pickled bytes, so its process imports nothing of stepedit but the store (round_handoff.py) and
starts about as fast as a bare Ray worker. `RoundEnd`, in whichever worker runs it, finds the
actor by name (the handle is looked up once per process) and waits until the actor holds the
batch's records before the items move on: the item that comes back through Ray Data can not
overtake its own records, so the writer never takes a clip before its rounds have arrived.

The same actor counts the run's model setups (`add`, `setups`) while it is open, so a run's
bookkeeping takes one small worker process, not two (each is a Python process starting on the
path of a short run's only shard).

The actor is not restarted: a restarted one would have lost what it held. Its death surfaces
as `MissingRoundRecords` when the writer next takes or checks, which ends the run; a resume
runs the clips whose rounds were not committed again.
"""

from __future__ import annotations

import logging
import pickle
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stepedit_core.lifecycle.round_handoff import (
    Handed,
    Keyed,
    MissingRoundRecords,
    RoundRecordStore,
)

if TYPE_CHECKING:
    from stepedit_core.catalog.records import RoundRecord

log = logging.getLogger(__name__)

NAME_PREFIX = "stepedit-round-records-"


# (namespace, actor name) -> handle, looked up once per worker process
_handles: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class RayRoundSink:
    """Where `RoundEnd` puts records inside a Ray worker: the channel actor, by name."""

    actor_name: str
    namespace: str

    def put(self, records: list[Handed]) -> None:
        import ray

        ray.get(self._actor().put_keyed.remote(_keyed(records)))  # held before items move on

    def _actor(self) -> Any:
        import ray

        key = (self.namespace, self.actor_name)
        if key not in _handles:
            try:
                _handles[key] = ray.get_actor(self.actor_name, namespace=self.namespace)
            except ValueError:
                raise MissingRoundRecords(
                    f"the run's round channel (Ray actor {self.actor_name!r} in namespace "
                    f"{self.namespace!r}) is gone; this round's records can not be handed on"
                ) from None
        return _handles[key]


class SetupCounter:
    """Counts `setup()` calls per stage across the actors of a run (held by a tiny Ray actor)."""

    def __init__(self) -> None:
        self.setup_counts: dict[str, int] = {}

    def add(self, stage: str) -> None:
        self.setup_counts[stage] = self.setup_counts.get(stage, 0) + 1

    def get(self) -> dict[str, int]:
        return dict(self.setup_counts)


class ChannelActor(RoundRecordStore, SetupCounter):
    """The channel's actor: the record store, and the count of model setups that the
    executor's actors report as they set up."""

    def __init__(self) -> None:
        RoundRecordStore.__init__(self)
        SetupCounter.__init__(self)


class RayRoundChannel:
    """The driver's side: creates the named actor, takes records from it, kills it."""

    def __init__(self) -> None:
        import ray

        self.name = NAME_PREFIX + uuid.uuid4().hex[:16]
        self.namespace = ray.get_runtime_context().namespace
        actor_class = ray.remote(num_cpus=0, max_restarts=0)(ChannelActor)
        self._actor = actor_class.options(name=self.name, namespace=self.namespace).remote()

    @property
    def sink(self) -> RayRoundSink:
        return RayRoundSink(self.name, self.namespace)

    def put(self, records: list[Handed]) -> None:
        self._call(self._actor.put_keyed.remote(_keyed(records)))

    def take_row(self, row_index: int, attempt: int) -> list[RoundRecord]:
        return [
            pickle.loads(blob)
            for blob in self._call(self._actor.take_row.remote(row_index, attempt))
        ]

    def held(self) -> int:
        return self._call(self._actor.held.remote())

    @property
    def setup_counter(self) -> Any:
        """The handle actors report their setups to (`add.remote(stage)`)."""
        return self._actor

    def setups(self) -> dict[str, int]:
        """Stage name -> setups reported so far."""
        return self._call(self._actor.get.remote())

    def _call(self, ref: Any) -> Any:
        import ray
        import ray.exceptions

        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            raise MissingRoundRecords(
                f"the run's round channel (Ray actor {self.name!r}) died "
                f"({type(exc).__name__}); the rounds it held are not committed, and a resume "
                "runs their clips again"
            ) from None

    def close(self) -> None:
        """Kill the actor (what it still holds belongs to no committed clip)."""
        import ray

        if not ray.is_initialized():
            return  # the cluster went first, and the actor with it
        try:
            ray.kill(self._actor, no_restart=True)
        except Exception as exc:  # noqa: BLE001 - never hide the error that ended the run
            log.warning("could not kill the round channel actor %s: %s", self.name, exc)


def _keyed(records: list[Handed]) -> list[Keyed]:
    """Records as the actor holds them: keyed, each as its pickled bytes."""
    return [(r.row_index, attempt, r.round, pickle.dumps(r, protocol=5)) for attempt, r in records]

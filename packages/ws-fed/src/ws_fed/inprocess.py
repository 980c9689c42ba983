"""``InProcessGrid``: a Flower ``Grid`` that delivers messages to a ClientApp in the same process.

Flower's engines (``flwr run`` on the Ray simulation engine or on a SuperLink with SuperNodes) run the
ServerApp and each ClientApp in separate processes. For quick experiments, benchmarks and tests this
grid runs the very same strategy and the very same ``ClientApp`` object in one process, sequentially:
``strategy.start(grid, ...)`` is unchanged. Message contents are deep-copied in both directions, as
serialisation would, and a ClientApp that raises produces an error reply, as a SuperNode would.

Example::

    >>> from ws_fed.client_app import app as client_app
    >>> with InProcessGrid(client_app, num_nodes=4, run_config=FedConfig().to_run_config()) as grid:  # doctest: +SKIP
    ...     result = SuperFedNAS(net).start(grid, ArrayRecord(net.state_dict()), num_rounds=2)
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from logging import WARNING
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore import log
from flwr.supercore.run import Run

__all__ = ["CLIENT_APP_ERROR", "InProcessGrid"]

CLIENT_APP_ERROR = 2
"""Error code of replies whose ClientApp raised (Flower's ``ErrorCode.CLIENT_APP_RAISED_EXCEPTION``)."""

_SERVER_NODE_ID = 0


class InProcessGrid(Grid):
    """A Grid of ``num_nodes`` virtual nodes that run ``client_app`` in this process.

    Args:
        client_app: the ClientApp every node runs (a ``flwr.clientapp.ClientApp`` or any callable
            ``(Message, Context) -> Message``).
        num_nodes: number of nodes; node ``i`` gets ``node_config`` ``{"partition-id": i,
            "num-partitions": num_nodes}`` as in Flower's simulation engine.
        run_config: the run config every ClientApp sees (``context.run_config``).
        node_configs: explicit node configs instead (one per node).
        run_id: the run's id.

    Use it as a context manager: inside, messages can be built with ``Message(...)`` (Flower reads the
    sender's identity from the running task, which this grid provides while it is open).
    """

    def __init__(
        self,
        client_app: ClientApp | Callable[[Message, Context], Message],
        num_nodes: int | None = None,
        run_config: Mapping[str, Any] | None = None,
        node_configs: Sequence[Mapping[str, Any]] | None = None,
        run_id: int = 1,
    ) -> None:
        if node_configs is None:
            if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
                raise ValueError(f"num_nodes must be an int >= 1, got {num_nodes!r}")
            node_configs = [{"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)]
        elif num_nodes is not None and num_nodes != len(node_configs):
            raise ValueError(f"num_nodes={num_nodes} but {len(node_configs)} node_configs")
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        self._contexts = {
            1000 + i: Context(run_id=run_id, node_id=1000 + i, node_config=dict(nc), state=RecordDict(),
                              run_config=dict(run_config or {}))
            for i, nc in enumerate(node_configs)
        }
        self._replies: dict[str, Message] = {}
        self._saved_identity: tuple[Any, Any, Any] | None = None

    # Task identity (Flower stamps messages with the running task's ids) ---------------------------
    def __enter__(self) -> InProcessGrid:
        from flwr.supercore.task_identity import TaskIdentity

        self._saved_identity = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
        TaskIdentity.run_id = self._run.run_id
        TaskIdentity.node_id = _SERVER_NODE_ID
        TaskIdentity.task_id = 1
        return self

    def __exit__(self, *exc: object) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        if self._saved_identity is not None:
            TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = self._saved_identity
            self._saved_identity = None

    # Grid API --------------------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def context(self, node_id: int) -> Context:
        """The persistent ``Context`` of one node."""
        return self._contexts[node_id]

    def _deliver(self, msg: Message) -> Message:
        node_id = msg.metadata.dst_node_id
        delivered = Message(copy.deepcopy(msg.content), metadata=copy.deepcopy(msg.metadata))
        try:
            reply = self.client_app(delivered, self._contexts[node_id])
        except Exception as e:  # a failing client becomes an error reply, as on a SuperNode
            log(WARNING, "InProcessGrid: ClientApp of node %d raised %s: %s", node_id, type(e).__name__, e)
            reason = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
            return Message(Error(code=CLIENT_APP_ERROR, reason=reason), reply_to=msg)
        if reply.has_error():
            return Message(copy.deepcopy(reply.error), reply_to=msg)
        return Message(copy.deepcopy(reply.content), reply_to=msg)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            if msg.metadata.dst_node_id not in self._contexts:
                raise ValueError(f"InProcessGrid: no node {msg.metadata.dst_node_id}")
            msg.metadata.__dict__["_message_id"] = message_id = uuid4().hex
            self._replies[message_id] = self._deliver(msg)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Deliver every message and return all replies (delivery is synchronous: ``timeout`` is not used)."""
        return self.pull_messages(self.push_messages(messages))

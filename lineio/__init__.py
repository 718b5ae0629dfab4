"""On the line: every inspection result delivered to PLCs and plant systems (Qt-free).

    record (one inspected part) -> LineOutputs.publish -> outbox (SQLite, durable)
                                                        -> one thread per sink -> MQTT / HTTP /
                                                           PostgreSQL / Modbus TCP / OPC UA

Each sink has its own thread and its own rows in the outbox table, so a slow or absent peer
never delays inspection and nothing is lost when a peer is down, the app is killed or the
machine reboots: a message leaves the outbox only when its sink has confirmed it (at least
once, with a stable message id per part so that receivers can drop repeats).
"""

from .message import MESSAGE_FIELDS, message_from_record
from .outbox import Outbox, OutboxError
from .outputs import LineOutputs
from .sinks import Sink, SinkError, SinkStatus, RejectedMessage, parse_sink_url, safe_url

__all__ = [
    "MESSAGE_FIELDS", "message_from_record", "Outbox", "OutboxError", "LineOutputs", "Sink", "SinkError",
    "SinkStatus", "RejectedMessage", "parse_sink_url", "safe_url",
]

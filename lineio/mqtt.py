"""MQTT output (paho-mqtt): one JSON message per part at QoS 1 on the URL's topic, and the
station state retained on `<topic>/state` (with a last will: 'offline' when the station
disappears without saying goodbye).

With `commands=1` the station also takes commands on `<topic>/command` (JSON; give the broker an
ACL so that only the plant's systems may publish there) and answers each on
`<topic>/command/reply` with {"request_id", "command", "ok", "detail", "station"}:
    {"command": "trigger", "part_id": "A-17", "request_id": "1"}        one acquisition
    {"command": "select_recipe", "name": "coins", "request_id": "2"}   switch the product

    mqtt://[user:password@]host[:1883]/line3/station1?client_id=NAME&keepalive=30
    mqtts://host[:8883]/line3/station1[?ca=/path/ca.pem]     TLS (the system's CAs unless ca= names a file)
"""

from __future__ import annotations

import json
import threading
import zlib
from pathlib import Path

import paho.mqtt.client as mqtt

from .message import encode, now_iso
from .sinks import Sink, SinkError, parse_sink_url

__all__ = ["MqttSink", "DEFAULT_PORT", "PUBACK_TIMEOUT_S"]

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
PUBACK_TIMEOUT_S = 5.0     # a message counts as delivered when the broker has acknowledged it (PUBACK)
KEEPALIVE_S = 30
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 15
CONNECT_WAIT_S = 3.0


class MqttSink(Sink):
    scheme = "mqtt"

    def __init__(self, url: str):
        super().__init__(url)
        scheme, parts, query = parse_sink_url(url)
        self.tls = scheme == "mqtts"
        self.ca_file = query.get("ca") or None
        if self.ca_file and not Path(self.ca_file).is_file():
            raise ValueError(f"{self.name}: the CA file {self.ca_file} does not exist")
        self.host, self.port = parts.hostname, parts.port or (DEFAULT_TLS_PORT if self.tls else DEFAULT_PORT)
        self.topic = parts.path.strip("/")
        self.username, self.password = parts.username, parts.password
        self.client_id = query.get("client_id", "")
        self.commands = query.get("commands", "0").lower() in ("1", "true", "yes")
        try:
            self.keepalive = int(query.get("keepalive", KEEPALIVE_S))
        except ValueError:
            raise ValueError(f"{self.name}: keepalive must be a number of seconds") from None
        self._connected = threading.Event()
        self._state = {"state": "ready", "detail": ""}
        self._client: mqtt.Client | None = None

    @property
    def result_topic(self) -> str:
        return self.topic or f"deco-inspector/{self.station or 'station'}/results"

    @property
    def state_topic(self) -> str:
        return f"{self.result_topic}/state"

    @property
    def command_topic(self) -> str:
        return f"{self.result_topic}/command"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _state_payload(self, state: str, detail: str = "") -> str:
        return json.dumps({"station": self.station, "state": state, "detail": detail, "time": now_iso()})

    def open(self) -> None:
        client_id = self.client_id or f"deco-inspector-{zlib.crc32(f'{self.station}|{self.url}'.encode()):08x}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(ca_certs=self.ca_file)
        client.will_set(self.state_topic, self._state_payload("offline", "connection lost"), qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_command
        client.connect_async(self.host, self.port, keepalive=self.keepalive)
        client.loop_start()
        self._client = client
        self._connected.wait(CONNECT_WAIT_S)   # usually connected by the first delivery; if not, it retries

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._connected.clear()
            return
        self._connected.set()
        if self.commands:
            client.subscribe(self.command_topic, qos=1)
        client.publish(self.state_topic, self._state_payload(self._state["state"], self._state["detail"]),
                       qos=1, retain=True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()

    def _on_command(self, client, userdata, msg) -> None:
        """A command from the plant (on paho's thread: a recipe switch runs in its own thread)."""
        try:
            request = json.loads(msg.payload)
            command = request["command"]
        except (ValueError, KeyError, TypeError):
            self._reply({}, False, "not a command: expected JSON with a 'command' field")
            return
        if command == "trigger":
            accepted = bool(self.on_trigger and self.on_trigger(str(request.get("part_id") or ""), "mqtt"))
            detail = "" if accepted else ("this station takes no triggers (free-run)" if self.on_trigger is None
                                          else "busy: a trigger is already waiting")
            self._reply(request, accepted, detail)
        elif command == "select_recipe" and self.on_select_recipe is not None:
            def select() -> None:
                problem = self.on_select_recipe(str(request.get("name") or ""))
                self._reply(request, not problem, problem)

            threading.Thread(target=select, name="mqtt recipe command", daemon=True).start()
        else:
            self._reply(request, False, f"unknown command {command!r}; this station takes "
                                        + ("trigger and select_recipe" if self.on_select_recipe else "trigger"))

    def _reply(self, request: dict, ok: bool, detail: str) -> None:
        if self._client is not None:
            self._client.publish(f"{self.command_topic}/reply", json.dumps(
                {"request_id": request.get("request_id"), "command": request.get("command"), "ok": ok,
                 "detail": detail, "station": self.station}), qos=1)

    def deliver(self, message: dict) -> None:
        if self._client is None or not self._connected.is_set():
            raise SinkError(f"not connected to the broker at {self.host}:{self.port}")
        info = self._client.publish(self.result_topic, encode(message), qos=1)
        try:
            info.wait_for_publish(PUBACK_TIMEOUT_S)
        except (RuntimeError, ValueError) as e:
            raise SinkError(str(e)) from None
        if not info.is_published():
            raise SinkError(f"the broker did not acknowledge within {PUBACK_TIMEOUT_S:.0f} s")

    def on_state(self, state: str, detail: str = "") -> None:
        self._state = {"state": state, "detail": detail}
        if self._client is not None and self._connected.is_set():
            info = self._client.publish(self.state_topic, self._state_payload(state, detail), qos=1, retain=True)
            if state == "offline":
                info.wait_for_publish(PUBACK_TIMEOUT_S)

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        self._connected.clear()

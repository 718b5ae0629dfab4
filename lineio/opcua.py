"""OPC UA output (asyncua): the station as an OPC UA server, modelled on the concepts of the
OPC UA Machine Vision companion specification (OPC 40100: a vision system with a state
machine, recipe management and result management). Not a certified implementation of that
information model: a small address space with the same ideas and names a PLC programmer expects.

    opcua://0.0.0.0:4840[/path]     -> endpoint opc.tcp://0.0.0.0:4840/deco-inspector/ (or /path)

Objects/VisionSystem (namespace urn:deco-inspector:machine-vision)
    Station                  String   the station's name
    State                    String   Ready | Busy | ResultAvailable | Error | Offline
    StateDetail              String   why (in Error)
    StartSingleJob(PartId)   -> Boolean   trigger one acquisition; False while busy
    RecipeManagement/
        ActiveRecipe         String
        SelectRecipe(Name)   -> String    '' when done, else the reason it was not
    ResultManagement/
        ResultCounter UInt32, ResultId String, PartId String, Verdict String (pass|review|fail|error),
        VerdictCode Int32 (1..4), Score Double, ResultTime String, LastResult String (the message, JSON)
"""

from __future__ import annotations

import asyncio
import logging
import threading

from asyncua import Server, ua

from .message import VERDICT_CODES, encode
from .sinks import Sink, SinkError, parse_sink_url

__all__ = ["OpcUaSink", "NAMESPACE", "DEFAULT_PORT", "STATE_NAMES"]

NAMESPACE = "urn:deco-inspector:machine-vision"
DEFAULT_PORT = 4840
DEFAULT_PATH = "/deco-inspector/"
START_TIMEOUT_S = 60.0      # the server builds the standard address space first (seconds on a small CPU)
CALL_TIMEOUT_S = 10.0
STATE_NAMES = {"ready": "Ready", "busy": "Busy", "error": "Error", "offline": "Offline"}
RESULT_AVAILABLE = "ResultAvailable"

logging.getLogger("asyncua").setLevel(logging.WARNING)


class OpcUaSink(Sink):
    scheme = "opcua"

    def __init__(self, url: str):
        super().__init__(url)
        _, parts, _ = parse_sink_url(url)
        self.endpoint = f"opc.tcp://{parts.hostname}:{parts.port or DEFAULT_PORT}{parts.path or DEFAULT_PATH}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._nodes: dict[str, object] = {}
        self._pending: set[asyncio.Task] = set()
        self._state = "Offline"
        self._result_since_busy = False
        self._counter = 0
        self.active_recipe = ""

    @property
    def connected(self) -> bool:
        return self._server is not None

    def open(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua server", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(START_TIMEOUT_S)
        except OSError as e:
            self._server = None
            raise SinkError(f"cannot start the OPC UA server at {self.endpoint}: {e.strerror or e}") from None

    async def _start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"DeCo Inspector {self.station}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE)
        system = await server.nodes.objects.add_object(idx, "VisionSystem")
        recipes = await system.add_folder(idx, "RecipeManagement")
        results = await system.add_folder(idx, "ResultManagement")
        n = self._nodes
        n["Station"] = await system.add_variable(idx, "Station", self.station, ua.VariantType.String)
        n["State"] = await system.add_variable(idx, "State", self._state, ua.VariantType.String)
        n["StateDetail"] = await system.add_variable(idx, "StateDetail", "", ua.VariantType.String)
        n["ActiveRecipe"] = await recipes.add_variable(idx, "ActiveRecipe", self.active_recipe, ua.VariantType.String)
        for name, value, kind in (("ResultCounter", 0, ua.VariantType.UInt32), ("ResultId", "", ua.VariantType.String),
                                  ("PartId", "", ua.VariantType.String), ("Verdict", "", ua.VariantType.String),
                                  ("VerdictCode", 0, ua.VariantType.Int32), ("Score", 0.0, ua.VariantType.Double),
                                  ("ResultTime", "", ua.VariantType.String), ("LastResult", "", ua.VariantType.String)):
            n[name] = await results.add_variable(idx, name, value, kind)
        await system.add_method(idx, "StartSingleJob", self._start_single_job, [ua.VariantType.String],
                                [ua.VariantType.Boolean])
        await recipes.add_method(idx, "SelectRecipe", self._select_recipe, [ua.VariantType.String],
                                 [ua.VariantType.String])
        await server.start()
        self._server = server

    async def _start_single_job(self, parent, part_id) -> list:
        text = part_id.Value if isinstance(part_id, ua.Variant) else part_id
        accepted = bool(self.on_trigger and self._state in ("Ready", RESULT_AVAILABLE) and self.on_trigger(text or "", "plc"))
        return [ua.Variant(accepted, ua.VariantType.Boolean)]

    async def _select_recipe(self, parent, name) -> list:
        text = name.Value if isinstance(name, ua.Variant) else name
        if self.on_select_recipe is None:
            problem = "this station cannot change recipes"
        else:
            problem = await asyncio.get_running_loop().run_in_executor(None, self.on_select_recipe, text or "")
        if not problem:
            self.active_recipe = text
            await self._nodes["ActiveRecipe"].write_value(text, ua.VariantType.String)
        return [ua.Variant(problem or "", ua.VariantType.String)]

    def _write(self, values: dict[str, tuple[object, object]]) -> None:
        """Write node values from any thread: waits until written, except on the server's own thread
        (a method handler that changes the state), where it is scheduled."""
        if self._server is None or self._loop is None:
            raise SinkError(f"the OPC UA server at {self.endpoint} is not running")

        async def write() -> None:
            for name, (value, kind) in values.items():
                await self._nodes[name].write_value(value, kind)

        if threading.current_thread() is self._thread:
            task = self._loop.create_task(write())
            self._pending.add(task)   # the loop keeps only a weak reference
            task.add_done_callback(self._pending.discard)
        else:
            asyncio.run_coroutine_threadsafe(write(), self._loop).result(CALL_TIMEOUT_S)

    def set_active_recipe(self, name: str) -> None:
        """The recipe the station runs (shown in RecipeManagement/ActiveRecipe)."""
        self.active_recipe = name
        if self._server is not None:
            self._write({"ActiveRecipe": (name, ua.VariantType.String)})

    def on_state(self, state: str, detail: str = "") -> None:
        if state == "busy":
            self._result_since_busy = False
        name = RESULT_AVAILABLE if state == "ready" and self._result_since_busy else STATE_NAMES[state]
        self._state = name
        if self._server is not None:
            self._write({"State": (name, ua.VariantType.String), "StateDetail": (detail, ua.VariantType.String)})

    def deliver(self, message: dict) -> None:
        self._counter += 1
        values = {
            "ResultCounter": (self._counter, ua.VariantType.UInt32),
            "ResultId": (message["message_id"], ua.VariantType.String),
            "PartId": (message.get("part_id") or "", ua.VariantType.String),
            "Verdict": (message["verdict"], ua.VariantType.String),
            "VerdictCode": (VERDICT_CODES[message["verdict"]], ua.VariantType.Int32),
            "Score": (float(message["score"]) if message.get("score") is not None else float("nan"),
                      ua.VariantType.Double),
            "ResultTime": (message["time"], ua.VariantType.String),
            "LastResult": (encode(message), ua.VariantType.String),
        }
        self._result_since_busy = True
        if self._state == "Ready":
            self._state = RESULT_AVAILABLE
            values["State"] = (RESULT_AVAILABLE, ua.VariantType.String)
        self._write(values)

    def close(self) -> None:
        if self._loop is None:
            return
        if self._server is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(CALL_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - stopping a half-started server
                pass
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(CALL_TIMEOUT_S)
        self._loop.close()
        self._loop = None

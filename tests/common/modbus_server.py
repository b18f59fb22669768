"""A Modbus device for the gateway's tests: pymodbus's own server (pinned
3.16.1, the simulator `SimDevice` API), so the gateway is checked against a
peer that is not our code.

Usage:
  modbus_server.py --state FILE --units 1,2 --tcp PORT
  modbus_server.py --state FILE --units 1,2 --serial /path/to/pty

Every unit serves addresses 0..SIZE-1 of each table. The test controls the
device through FILE, a JSON object it rewrites atomically (write + rename):

  {"1": {"coil": [true, ...], "discrete_input": [...],
         "input": [word, ...], "holding": [word, ...],
         "mode": "normal" | "silent" | "slow",
         "delay_ms": 800,
         "exception": {"table": "holding", "from": 0, "to": 3}}}

Before each request the file is re-read when it changed, and the unit's
registers are set from it; `silent` never answers (the connection stays
open), `slow` answers after `delay_ms`, `exception` answers exception 2
(illegal data address) for requests touching that range. Prints READY on
stdout once it serves.
"""

import argparse
import asyncio
import functools
import json
import os
import sys

import pymodbus
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

SIZE = 64
TABLES = {1: "coil", 2: "discrete_input", 3: "holding", 4: "input"}


class State:
    """The control file, re-read at every request: a few hundred bytes, and a
    modification time is too coarse (several writes can share one tick, and
    the last change would go unseen)."""

    def __init__(self, path):
        self.path = path
        self.units = {}

    def get(self, unit):
        try:
            with open(self.path, encoding="utf-8") as f:
                self.units = json.load(f)
        except (OSError, ValueError) as e:
            print(f"state file: {e}", file=sys.stderr, flush=True)
        return self.units.get(str(unit), {})


async def action(state, unit, function_code, _start, address, count, registers, set_values):
    """Sets the unit's registers from the control file and plays its mode."""
    table = TABLES.get(function_code)
    if table is None or set_values is not None:
        return None
    s = state.get(unit)
    mode = s.get("mode", "normal")
    if mode == "silent":
        await asyncio.sleep(3600)
    elif mode == "slow":
        await asyncio.sleep(s.get("delay_ms", 1000) / 1000)
    exc = s.get("exception")
    if exc and exc.get("table") == table:
        if address <= exc.get("to", 0) and address + count - 1 >= exc.get("from", 0):
            return ExcCodes.ILLEGAL_ADDRESS
    values = list(s.get(table, []))[:SIZE]
    if table in ("coil", "discrete_input"):
        bits = [bool(v) for v in values] + [False] * (SIZE - len(values))
        words = SimUtils.bitsToRegisters(bits)
    else:
        words = [int(v) & 0xFFFF for v in values] + [0] * (SIZE - len(values))
    registers[: len(words)] = words
    return None


def device(state, unit):
    bits = lambda: [SimData(0, count=SIZE, values=False, datatype=DataType.BITS)]
    regs = lambda: [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)]
    return SimDevice(
        id=unit,
        simdata=(bits(), bits(), regs(), regs()),
        action=functools.partial(action, state, unit),
    )


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--state", required=True)
    p.add_argument("--units", default="1")
    p.add_argument("--tcp", type=int)
    p.add_argument("--serial")
    p.add_argument("--baud", type=int, default=19200)
    a = p.parse_args()
    state = State(a.state)
    devices = [device(state, int(u)) for u in a.units.split(",")]
    if a.tcp:
        server = ModbusTcpServer(devices, address=("127.0.0.1", a.tcp))
    else:
        server = ModbusSerialServer(devices, port=a.serial, baudrate=a.baud)
    await server.serve_forever(background=True)
    print(f"READY pymodbus {pymodbus.__version__}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())

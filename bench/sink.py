"""A minimal webhook receiver on loopback: answers every HTTP request with 200.

The benchmark's orders carry a callback_url pointing here, so webhook delivery
(when Kassa sends them) never leaves the machine. Prints how many requests it
received when stopped (SIGTERM/SIGINT).

    python bench/sink.py PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


async def main(port: int) -> None:
    received = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                received += 1
                writer.write(REPLY)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"webhook sink: {received} requests received", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

# The Python client example of seed 002 ("Testing WebSocket / Using Python"), verbatim but for
# the URI, which carries the server address and a token (argv[1]) instead of localhost:8000,
# and the conversation/receiver ids (argv[2], argv[3]) instead of 1 and 2.
import asyncio
import json
import sys

import websockets

uri_arg = sys.argv[1]
conversation_id = int(sys.argv[2])
receiver_id = int(sys.argv[3])


async def test_websocket():
    uri = uri_arg

    async with websockets.connect(uri) as websocket:
        # Receive connection confirmation
        response = await websocket.recv()
        print(f"< {response}")

        # Send message
        message = {
            "type": "chat_message",
            "conversation_id": conversation_id,
            "receiver_id": receiver_id,
            "text": "Hello from Python!"
        }
        await websocket.send(json.dumps(message))

        # Receive confirmation
        response = await websocket.recv()
        print(f"< {response}")

asyncio.run(test_websocket())

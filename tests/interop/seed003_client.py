# The Python client example of seed 003 ("Using Python WebSocket Client"), verbatim but for the
# URI, which carries the server address and the conversation id (argv[1]) instead of
# ws://localhost:8000/ws/chat/1/. Like Channels' AuthMiddlewareStack, the server knows the user
# by the page's Django session cookie (added by with_cookie.py, as the browser would).
import asyncio
import sys

import websockets
import json

uri_arg = sys.argv[1]


async def test_chat():
    async with websockets.connect(uri_arg) as ws:
        # Send message
        await ws.send(json.dumps({
            'type': 'message',
            'content': 'Test message'
        }))

        # Receive message
        response = await ws.recv()
        print('Received:', json.loads(response))

asyncio.run(test_chat())

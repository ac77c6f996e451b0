#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/seed-*), from real inputs:
client frames as RFC 6455 masks them, the API's requests, tokens shaped like the ones the daemon
mints, the shipped config files, and journals written by the real daemon (started in dev mode,
sent messages, killed with SIGKILL so the journal still holds its batches).

    cargo build && python3 fuzz/make_corpus.py target/debug/indaba

Inputs found by fuzzing are kept beside the seeds as regression-*; this script never touches
them. The formats each target reads are in src/fuzzing.rs.
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
# src/fuzzing.rs: JWT_SECRET
JWT_SECRET = b"fuzzing-jwt-secret-0123456789abc"


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def clear_seeds():
    for target in os.listdir(CORPUS) if os.path.isdir(CORPUS) else []:
        for name in os.listdir(os.path.join(CORPUS, target)):
            if name.startswith("seed-"):
                os.remove(os.path.join(CORPUS, target, name))


# --- WebSocket frames: first byte = piece size for the dribbled read, then client bytes.
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(first, payload, mask=MASK):
    out = bytearray([first])
    n = len(payload)
    if n < 126:
        out.append(0x80 | n)
    elif n <= 0xFFFF:
        out.append(0x80 | 126)
        out += n.to_bytes(2, "big")
    else:
        out.append(0x80 | 127)
        out += n.to_bytes(8, "big")
    out += mask
    out += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(out)


def ws_seeds():
    chat = json.dumps({"type": "chat_message", "conversation_id": 1, "text": "Hello, I am interested in your property", "client_id": "web-1"}).encode()
    write("ws_frames", "chat", b"\x07" + frame(0x81, chat))
    write("ws_frames", "typing-receipt-sync", b"\x03" + frame(0x81, b'{"type":"typing_indicator","conversation_id":1,"is_typing":true}') + frame(0x81, b'{"type":"read_receipt","message_ids":[1,2,3]}') + frame(0x81, b'{"type":"sync","since_message_id":0}'))
    write("ws_frames", "conversation-dialect", b"\x10" + frame(0x81, b'{"type":"message","content":"hi"}') + frame(0x81, b'{"type":"typing","is_typing":false}') + frame(0x81, b'{"type":"read","message_ids":[4]}'))
    write("ws_frames", "fragmented-utf8", b"\x01" + frame(0x01, "κό".encode()) + frame(0x89, b"ping") + frame(0x00, "σμ".encode()) + frame(0x80, "ε".encode()))
    write("ws_frames", "binary-16bit-length", b"\x3f" + frame(0x82, bytes(range(256)) * 2))
    write("ws_frames", "close-with-reason", b"\x02" + frame(0x81, b'{"type":"ping"}') + frame(0x88, (1000).to_bytes(2, "big") + b"bye"))
    write("ws_frames", "pong-and-empty-close", b"\x05" + frame(0x8A, b"") + frame(0x88, b""))


# --- HTTP requests, in the target's text form.
def http_seeds():
    reqs = {
        "health": "GET /api/health/\n\n",
        "openapi": "GET /api/openapi.json\n\n",
        "register": 'POST /api/v1/auth/register/\nContent-Type: application/json\n\n{"username":"ann","password":"correct horse battery","display_name":"Ann"}',
        "login": 'POST /api/v1/auth/token/\nContent-Type: application/json\n\n{"username":"ann","password":"correct horse battery"}',
        "refresh": 'POST /api/v1/auth/token/refresh/\nContent-Type: application/json\n\n{"refresh":"{user}"}',
        "me": "GET /api/v1/auth/me/\nAuthorization: Bearer {user}\n\n",
        "find-user": "GET /api/v1/auth/users/?username=ann\nAuthorization: Bearer {user}\n\n",
        "user-by-id": "GET /api/v1/auth/users/2/\nAuthorization: Bearer {user}\n\n",
        "create-conversation": 'POST /api/v1/messaging/conversations/\nAuthorization: Bearer {user}\nContent-Type: application/json\n\n{"participants":[2],"subject":"Inquiry about property","property":1,"booking":null}',
        "list-conversations": "GET /api/v1/messaging/conversations/?archived=false&page=1&page_size=20\nAuthorization: Bearer {user}\n\n",
        "conversation": "GET /api/v1/messaging/conversations/1/\nAuthorization: Bearer {user2}\n\n",
        "archive": "POST /api/v1/messaging/conversations/1/archive/\nAuthorization: Bearer {user}\nContent-Type: application/json\n\n{}",
        "unarchive": "POST /api/v1/messaging/conversations/1/unarchive/\nAuthorization: Bearer {user}\n\n",
        "mark-all-read": "POST /api/v1/messaging/conversations/1/mark_all_read/\nAuthorization: Bearer {user2}\n\n",
        "unread-count": "GET /api/v1/messaging/conversations/unread_count/\nAuthorization: Bearer {user2}\n\n",
        "send": 'POST /api/v1/messaging/messages/\nAuthorization: Bearer {user}\nContent-Type: application/json\n\n{"conversation":1,"text":"Hello, I am interested in your property","client_id":"web-5f2c","message_type":"text","priority":"high","metadata":{"k":[1,{"x":null}]}}',
        "send-trailing-garbage": 'POST /api/v1/messaging/messages/\nAuthorization: Bearer {user}\nContent-Type: application/json\n\n{"conversation":1,"text":"x"}}}]]garbage!!',
        "history": "GET /api/v1/messaging/messages/?conversation=1&before=100&limit=10\nAuthorization: Bearer {user}\n\n",
        "message": "GET /api/v1/messaging/messages/1/\nAuthorization: Bearer {user}\n\n",
        "mark-as-read": "POST /api/v1/messaging/messages/1/mark_as_read/\nAuthorization: Bearer {user2}\nContent-Type: application/json\n\n{}",
        "unread": "GET /api/v1/messages/unread/?limit=5\nAuthorization: Bearer {user2}\n\n",
        "presence": "GET /api/v1/messaging/presence/?user_ids=1,2\nAuthorization: Bearer {user}\n\n",
        "service-send": 'POST /api/messages/send\nX-Service-Token: {service}\nContent-Type: application/json\n\n{"sender_id":3,"receiver_id":4,"text":"from the host app","priority":"urgent"}',
        "service-broadcast": 'POST /api/messages/broadcast\nAuthorization: Bearer {service}\nContent-Type: application/json\n\n{"user_ids":[1,2,5],"message":{"sender_id":3,"text":"maintenance tonight","message_type":"system"}}',
        "service-queue": "GET /api/messages/queue/2?peek=true&limit=10\nX-Service-Token: {service}\n\n",
        "stats": "GET /api/stats\nX-Service-Token: {service}\n\n",
        "metrics": "GET /metrics\nX-Service-Token: {service}\n\n",
        "erlang-health": "GET /api/v1/messaging/erlang/health/\n\n",
        "ready": "GET /ready\n\n",
    }
    for name, text in reqs.items():
        write("http_request", name, text)


# --- JWT: first byte 0 = token as given, 1 = claims signed, 2 = header \n claims signed.
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(claims, header=None):
    header = header or {"alg": "HS256", "typ": "JWT"}
    signed = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = hmac.new(JWT_SECRET, signed.encode(), hashlib.sha256).digest()
    return signed + "." + b64(sig)


def jwt_seeds():
    far = int(time.time()) + 100 * 365 * 86400
    access = {"token_type": "access", "exp": far, "iat": far - 300, "jti": "5f2c0e9a", "user_id": "42", "username": "ann"}
    write("jwt", "access-token", b"\x00" + token(access).encode())
    write("jwt", "refresh-token", b"\x00" + token(dict(access, token_type="refresh")).encode())
    write("jwt", "expired-token", b"\x00" + token(dict(access, exp=1000)).encode())
    write("jwt", "claims-numeric-id", b"\x01" + json.dumps({"exp": far, "user_id": 7}).encode())
    write("jwt", "claims-iss-aud", b"\x01" + json.dumps({"exp": far, "nbf": 0, "user_id": "9", "iss": "fuzz-iss", "aud": ["fuzz-aud", "x"]}).encode())
    write("jwt", "header-none-alg", b"\x02" + json.dumps({"alg": "none"}).encode() + b"\n" + json.dumps({"exp": far, "user_id": 1}).encode())
    write("jwt", "header-kid", b"\x02" + json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode() + b"\n" + json.dumps({"exp": far, "user_id": "9007199254740991"}).encode())


# --- Config: the shipped files, and overrides through the environment.
def config_seeds():
    for name, path in [("example", "config.toml.example"), ("packaging", "packaging/config.toml")]:
        with open(os.path.join(ROOT, path), "rb") as f:
            write("config", name, f.read())
    write("config", "env-overrides", '[server]\nlisten = "127.0.0.1:8080"\n\n[log]\nlevel = "info"\n%env\nINDABA_LOG__LEVEL=debug\nINDABA_LIMITS__MAX_TEXT_BYTES=4096\nINDABA_STORAGE__CHECKPOINT_INTERVAL=2s\n')


# --- Journals written by the real daemon. First byte 0: a whole file; 1: records to seal.
def journal_seeds(binary):
    write("journal", "records-torn", bytes([1, 3]) + b"abc" + bytes([0]) + bytes([5]) + b"hello" + bytes([0, 0x10, 0]))
    write("journal", "records-damaged", bytes([1, 2]) + b"ab" + bytes([4]) + b"wxyz" + bytes([1]) + b"!" + bytes([0x0B, 0x03, 0]))
    data = tempfile.mkdtemp(prefix="indaba-corpus-")
    try:
        proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--data-dir", data, "serve"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env=dict(os.environ, INDABA_STORAGE__CHECKPOINT_INTERVAL="1h"),
        )
        base = None
        for line in proc.stderr:
            if "listening on http://" in line:
                base = "http://" + line.split("listening on http://")[1].split()[0]
                break
        secret = open(os.path.join(data, "jwt_secret"), "rb").read().strip()

        def call(method, path, user, body=None):
            claims = {"token_type": "access", "exp": int(time.time()) + 3600, "user_id": str(user)}
            signed = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
            tok = signed + "." + b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())
            req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
            with urllib.request.urlopen(req) as r:
                return json.loads(r.read() or b"null")

        conv = call("POST", "/api/v1/messaging/conversations/", 1, {"participants": [2], "subject": "Inquiry"})
        for i in range(3):
            call("POST", "/api/v1/messaging/messages/", 1 + i % 2, {"conversation": conv["id"], "text": f"message {i}", "client_id": f"c{i}"})
        call("POST", f"/api/v1/messaging/conversations/{conv['id']}/mark_all_read/", 2, {})
        call("POST", f"/api/v1/messaging/conversations/{conv['id']}/archive/", 1, {})
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        journal = open(os.path.join(data, "indaba.journal"), "rb").read()
        write("journal", "daemon-journal", b"\x00" + journal)
        # The same journal cut inside its last record: the torn write of a crash.
        write("journal", "daemon-journal-torn", b"\x00" + journal[:-7])
        # One changed byte in its header.
        damaged = bytearray(journal)
        damaged[30] ^= 0x40
        write("journal", "daemon-journal-bad-header", b"\x00" + bytes(damaged))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    clear_seeds()
    ws_seeds()
    http_seeds()
    jwt_seeds()
    config_seeds()
    journal_seeds(sys.argv[1])


if __name__ == "__main__":
    main()

# Runs a seed client script (argv[1], with its own arguments after it) unchanged, with a
# `Cookie` header (env INDABA_TEST_COOKIE) on every websockets.connect: what the browser page
# the script stands for sends on its own, the Django session cookie included.
import os
import runpy
import sys

import websockets

cookie = os.environ["INDABA_TEST_COOKIE"]
connect = websockets.connect


def connect_with_cookie(uri, *args, **kwargs):
    headers = dict(kwargs.pop("additional_headers", None) or {})
    headers["Cookie"] = cookie
    return connect(uri, *args, additional_headers=headers, **kwargs)


websockets.connect = connect_with_cookie
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")

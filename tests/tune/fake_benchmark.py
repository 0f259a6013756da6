"""A stand-in benchmark: asks the server REQUESTS questions and prints {"gsm8k": accuracy} as its last line.

    python fake_benchmark.py <host> <port>
"""

from __future__ import annotations

import json
import sys
import urllib.request

REQUESTS = 4
host, port = sys.argv[1], sys.argv[2]
correct = 0
for i in range(REQUESTS):
    body = json.dumps({"model": "quantized", "messages": [{"role": "user", "content": f"question {i}"}]}).encode()
    request = urllib.request.Request(f"http://{host}:{port}/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        correct += json.loads(response.read())["choices"][0]["message"]["content"] == "float"
print("running gsm8k ...")
print(json.dumps({"gsm8k": 70 + 26 * correct / REQUESTS}))

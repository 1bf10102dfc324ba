"""The dummy engine: a deterministic stand-in LLM server (no GPU, no model) for the demo
and the tests.

text.py      the "model": text as a pure function of prompt, seed and max_new_tokens;
             its token count and chat template
protocol.py  TGI and OpenAI-compatible request/answer/error bodies, validated as the
             real servers do
faults.py    injected faults (429, 503, resets, hangs, crash), seeded per request
server.py    the aiohttp server (admission, batch, latency, /stats) and `serve-dummy`
"""

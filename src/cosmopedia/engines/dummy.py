"""A stand-in LLM server speaking TGI's HTTP API, for the demo and the tests (no GPU, no model).

The text it "generates" is a pure function of the prompt, the seed and `max_new_tokens`:
it retells the seed material (the text between the prompt's first and last double quote)
sentence by sentence, each sentence kept verbatim and followed by filler sentences chosen
by a hash of that sentence's first content words. So near-identical prompts give
near-identical texts (MinHash near-duplicates), unrelated prompts share almost no n-grams,
and a benchmark item quoted in a seed survives into the generation. The seed only draws
the length (long-tailed, with some "short" texts for the cleaning step to drop) and an
optional greeting opener.

Tokens: the dummy counts matches of `TOKEN_RE` (words and single punctuation marks); it
reports that count as `generated_tokens` and cuts at exactly `max_new_tokens` of them.

The server simulates an engine: a capacity of concurrent sequences (429 `overloaded` above
it, as TGI), a time per generated token, and injected faults (429, 503, connection resets,
hangs, a crash after N requests) drawn from a seeded hash of each request and of how often
that exact request was seen, so a faulty run is reproducible whatever the timing. It speaks
TGI's routes (`/generate`, `/`, `/info`, `/health`) and the OpenAI-compatible ones of vLLM
and SGLang (`/v1/completions`, `/v1/chat/completions`, `/v1/models`); `/stats` counts
requests and integrates the number of sequences in flight over time (engine saturation).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import logging
import math
import os
import random
import re
import socket
import struct
import sys
import time
from dataclasses import dataclass, fields

from aiohttp import web

import cosmopedia

log = logging.getLogger(__name__)

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")
WORD_RE = re.compile(r"\w+")

# Seed material shorter than this is not worth retelling: use the whole prompt instead.
MIN_CONTENT_CHARS = 20
SENTENCES_PER_PARAGRAPH = 2
OPENER_RATE = 0.15
SHORT_RATE = 0.08
SHORT_TOKENS = (40, 120)
MEDIAN_TOKENS = 500
LENGTH_SIGMA = 0.6
# Bounds the work per request when max_new_tokens is huge.
MAX_TARGET_TOKENS = 8000

MAX_INPUT_TOKENS = 24576
MAX_TOTAL_TOKENS = 32768
MAX_STOP_SEQUENCES = 4
SEED_LIMIT = 2**64

# Greetings a real model likes to start with; the clean step strips them. Each is one
# sentence with no inner . ! or ? so that the cleaner's opener pattern removes all of it.
OPENERS = (
    "Hello and welcome to today's lesson!",
    "Hello everyone, and thank you for joining me today!",
    "Hi there, and welcome to this short guide about {a}!",
    "Welcome, dear readers, to a closer look at {a}.",
    "Welcome back to our series on {a}!",
    "Greetings, curious minds, and welcome to our discussion of {a}!",
)

FILLERS = (
    "To see why {a} matters, it helps to look at {b} from more than one angle.",
    "In other words, {a} and {b} are closely connected here.",
    "Many readers first meet the idea of {a} through everyday examples.",
    "A useful way to remember this is to link {a} with {b}.",
    "Notice how {b} shapes the way we think about {a}.",
    "This point about {a} will come back several times in what follows.",
    "Experts often describe {a} as a starting point for understanding {b}.",
    "Consider a simple case in which {a} changes while {b} stays the same.",
    "It is worth pausing here to ask what {a} really means in practice.",
    "The link between {a} and {b} is easy to overlook at first.",
    "One common mistake is to treat {a} as if it had nothing to do with {b}.",
    "Looking closely at {a} reveals details that a quick reading would miss.",
    "For a student, the key question is how {a} fits into the bigger picture.",
    "Historians and practitioners alike have debated the role of {a}.",
    "A concrete example makes the role of {b} much clearer.",
    "We can summarize the idea by saying that {a} depends on {b}.",
    "Try explaining {a} to a friend, and you will quickly see where the gaps are.",
    "The details of {b} matter because they change how {a} plays out.",
    "Keep {a} in mind, since it explains much of what happens next.",
    "Put simply, {a} is only half of the story without {b}.",
    "There are good reasons to look at {a} step by step.",
    "Think of {b} as the background against which {a} makes sense.",
    "The same pattern shows up whenever {a} is involved.",
    "Asking why {b} matters is a good habit for any careful reader.",
    "Small changes in {a} can lead to surprisingly large effects on {b}.",
    "This is where {a} stops being abstract and becomes practical.",
    "A careful reader will notice that {b} appears again and again.",
    "Compare this with situations where {a} plays no role at all.",
    "Before moving on, make sure the meaning of {a} is clear.",
    "Seen this way, {b} is less a detail than a central theme.",
    "The story of {a} is also, in part, the story of {b}.",
    "Good examples of {a} can be found in many places once you start looking.",
    "It helps to write down what we already know about {a} and {b}.",
    "Questions about {a} rarely have a single simple answer.",
    "What makes {a} interesting is the way it interacts with {b}.",
    "Ideas like {a} are easier to grasp when tied to real situations.",
    "Note that {b} is not the same thing as {a}, even if they often appear together.",
    "Much of the discussion around {a} turns on how we understand {b}.",
    "A quick check: could you describe {a} without mentioning {b}?",
    "With that in mind, let us look at what the text says next about {a}.",
)

# Words too common to stand for a sentence's topic.
STOPWORDS = frozenset(
    """
    about above after again against also among because been before being below between both
    could does doing down during each from further have having here into itself just more most
    other over same should some such than that their theirs them then there these they this
    those through under until very were what when where which while with would your yours
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
FALLBACK_WORDS = ("this idea", "the topic")


def count_tokens(text: str) -> int:
    """The dummy's token count: words and single punctuation marks."""
    return sum(1 for _ in TOKEN_RE.finditer(text))


def _cut_tokens(text: str, n: int) -> str:
    """The prefix of `text` holding exactly its first `n` tokens."""
    for i, match in enumerate(TOKEN_RE.finditer(text)):
        if i == n - 1:
            return text[: match.end()]
    return text


def extract_content(prompt: str) -> str:
    """The seed material: the span between the first and last double quote, if long enough."""
    first, last = prompt.find('"'), prompt.rfind('"')
    span = prompt[first + 1 : last]
    if first != -1 and len(span) >= MIN_CONTENT_CHARS and span.strip():
        return span
    return prompt


def split_sentences(content: str) -> list[str]:
    return [
        s.strip()
        for line in content.splitlines()
        for s in SENTENCE_SPLIT_RE.split(line)
        if s.strip()
    ]


def _topic_words(sentence: str) -> tuple[str, str]:
    """The sentence's first two content words (in text order).

    Near-duplicate seeds differ by a few words somewhere in a sentence; taking the first
    content words (not, say, the longest) keeps most such edits out of the filler pick.
    """
    seen: dict[str, str] = {}
    for word in WORD_RE.findall(sentence):
        if len(word) >= 5 and word.isalpha() and word.lower() not in STOPWORDS:
            seen.setdefault(word.lower(), word)
    words = (*list(seen.values())[:2], *FALLBACK_WORDS)
    return words[0], words[1]


def _fillers(sentence: str) -> list[str]:
    """One or two filler sentences, picked by the sentence alone (never the seed).

    The pick hashes the sentence's topic words rather than all of it, so that an edit which
    leaves them alone (a near-duplicate seed) leaves the fillers alone too.
    """
    a, b = _topic_words(sentence)
    digest = hashlib.sha256(f"{a.lower()} {b.lower()}".encode()).digest()
    first = int.from_bytes(digest[:4], "big") % len(FILLERS)
    picks = [first]
    if digest[4] & 1:
        picks.append(
            (first + 1 + int.from_bytes(digest[5:9], "big") % (len(FILLERS) - 1)) % len(FILLERS)
        )
    return [FILLERS[i].format(a=a, b=b) for i in picks]


def _passage(sentences: list[str]) -> list[tuple[bool, str]]:
    """One retelling of the content as (starts_paragraph, sentence) units."""
    units = []
    for i, sentence in enumerate(sentences):
        units.append((i % SENTENCES_PER_PARAGRAPH == 0, sentence))
        units.extend((False, filler) for filler in _fillers(sentence))
    return units


def generate_text(prompt: str, seed: int | None, max_new_tokens: int) -> tuple[str, int, str]:
    """The dummy's generation: (text, generated tokens, finish_reason)."""
    if not prompt.strip():
        raise ValueError("the prompt has no tokens")
    content = extract_content(prompt)
    units = _passage(split_sentences(content) or [content.strip()])
    unit_tokens = [count_tokens(u) for _, u in units]

    # Greedy decoding (no seed) behaves like a fixed seed: the output stays deterministic.
    rng = random.Random(0 if seed is None else seed)
    opener_draw, opener_pick, short_draw = rng.random(), rng.random(), rng.random()
    short = short_draw < SHORT_RATE
    if short:
        target = rng.randint(*SHORT_TOKENS)
    else:
        lognormal = rng.lognormvariate(math.log(MEDIAN_TOKENS), LENGTH_SIGMA)
        target = min(int(lognormal), MAX_TARGET_TOKENS)

    pieces: list[str] = []
    total = 0
    if opener_draw < OPENER_RATE:
        topic = _topic_words(content)[0]
        opener = OPENERS[int(opener_pick * len(OPENERS))].format(a=topic)
        pieces.append(opener)
        total += count_tokens(opener)
    if not short:
        # The first retelling is always complete; longer targets repeat it identically.
        target = max(target, total + sum(unit_tokens))

    for k in itertools.count():
        starts_paragraph, unit = units[k % len(units)]
        n = unit_tokens[k % len(units)]
        if total + n > target:
            if total == 0:  # a short target inside the first sentence: stop mid-sentence
                pieces.append(_cut_tokens(unit, target))
            break
        if pieces:
            pieces.append("\n\n" if starts_paragraph and k > 0 else " ")
        pieces.append(unit)
        total += n
        if total > max_new_tokens:
            break

    text = "".join(pieces)
    n_tokens = count_tokens(text)
    if n_tokens > max_new_tokens:
        text = _cut_tokens(text, max_new_tokens)
        return text, max_new_tokens, "length"
    return text, n_tokens, "eos_token"


class RequestError(Exception):
    """A request the server answers with TGI's error JSON."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def _validation(message: str) -> RequestError:
    return RequestError(422, "validation", f"Input validation error: {message}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_request(body) -> tuple[str, dict, int, int | None]:
    """Validate a /generate body as TGI does: (inputs, parameters, max_new_tokens, seed)."""
    if not isinstance(body, dict):
        raise _validation("the request body must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        raise _validation("`inputs` must be a string")
    prompt_tokens = count_tokens(inputs)
    if prompt_tokens == 0:
        raise _validation("`inputs` cannot be empty")
    if prompt_tokens > MAX_INPUT_TOKENS:
        raise _validation(
            f"`inputs` must have less than {MAX_INPUT_TOKENS} tokens. Given: {prompt_tokens}"
        )
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise _validation("`parameters` must be an object")

    max_new_tokens = params.get("max_new_tokens")
    if max_new_tokens is None:
        # As TGI 3: without a limit, the generation may fill the rest of the context.
        max_new_tokens = MAX_TOTAL_TOKENS - prompt_tokens
    elif not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise _validation("`max_new_tokens` must be strictly positive")
    if prompt_tokens + max_new_tokens > MAX_TOTAL_TOKENS:
        raise _validation(
            f"`inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL_TOKENS}. "
            f"Given: {prompt_tokens} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    seed = params.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < SEED_LIMIT):
        raise _validation("`seed` must be a non-negative integer below 2**64")
    for name in ("temperature", "repetition_penalty", "frequency_penalty", "typical_p"):
        value = params.get(name)
        if value is not None and (not _is_number(value) or value <= 0):
            raise _validation(f"`{name}` must be strictly positive")
    top_p = params.get("top_p")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise _validation("`top_p` must be > 0.0 and <= 1.0")
    top_k = params.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise _validation("`top_k` must be strictly positive")
    for name in ("do_sample", "details", "return_full_text", "decoder_input_details"):
        if params.get(name) is not None and not isinstance(params[name], bool):
            raise _validation(f"`{name}` must be a boolean")
    stop = params.get("stop")
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        raise _validation("`stop` must be a list of strings")
    if stop and len(stop) > MAX_STOP_SEQUENCES:
        raise _validation(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences")
    return inputs, params, max_new_tokens, seed


# The dummy's chat template (Jinja, as in a model's tokenizer_config.json). The server
# renders it in plain Python (`apply_chat_template`); a client given this file renders it
# with Jinja: the two must give the same text.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CHAT_ROLES = ("system", "user", "assistant")
# Exit code of a simulated crash (`crash_after`).
CRASH_EXIT_CODE = 70
# A hung request gives up after this long even if its client never leaves.
MAX_HANG_S = 3600.0


def apply_chat_template(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """`CHAT_TEMPLATE` rendered without Jinja."""
    text = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


@dataclass(frozen=True)
class Faults:
    """Injected faults. Rates are probabilities per request, drawn in this order."""

    seed: int = 0
    rate_429: float = 0.0
    rate_503: float = 0.0
    rate_reset: float = 0.0
    rate_hang: float = 0.0
    # Exit abruptly (code CRASH_EXIT_CODE) when this request number arrives; 0: never.
    crash_after: int = 0

    def __post_init__(self):
        rates = [self.rate_429, self.rate_503, self.rate_reset, self.rate_hang]
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")
        if self.crash_after < 0:
            raise ValueError("crash_after must be >= 0")

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "seed")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def draw(self, request_hash: str, occurrence: int) -> str | None:
        """The fault of the `occurrence`-th sending of a request (0 = first), if any.

        A pure function of (seed, request, occurrence): a rerun with the same requests meets
        the same faults, whatever the order in which concurrent requests arrive.
        """
        digest = hashlib.sha256(f"{self.seed}\0{request_hash}\0{occurrence}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for kind, rate in (
            ("overloaded", self.rate_429),
            ("unavailable", self.rate_503),
            ("reset", self.rate_reset),
            ("hang", self.rate_hang),
        ):
            if u < rate:
                return kind
            u -= rate
        return None


class OpenAIError(RequestError):
    """An error of the OpenAI-compatible routes (vLLM's error JSON)."""


def _openai_validation(exc: RequestError) -> OpenAIError:
    return OpenAIError(400, "BadRequestError", str(exc))


def _openai_parameters(body: dict) -> dict:
    """TGI `parameters` for an OpenAI completions/chat body (then validated as by TGI)."""
    params: dict = {"details": True, "do_sample": True}
    if body.get("max_tokens") is not None:
        params["max_new_tokens"] = body["max_tokens"]
    for name in ("seed", "top_p", "repetition_penalty"):
        if body.get(name) is not None:
            params[name] = body[name]
    # OpenAI servers take temperature 0 (greedy) and top_k -1 (off); TGI's checks do not.
    if body.get("temperature") not in (None, 0, 0.0):
        params["temperature"] = body["temperature"]
    if body.get("top_k") not in (None, -1, 0):
        params["top_k"] = body["top_k"]
    return params


class DummyServer:
    """The HTTP server.

    `max_concurrent` requests are admitted (429 `overloaded` above, as TGI's
    --max-concurrent-requests); `max_batch` of them (default: all) generate at once, the
    others wait in a queue, as in TGI's batcher or vLLM's scheduler. `serve_info=False`
    mimics vLLM/SGLang, which have no /info route.
    """

    def __init__(
        self,
        model_id: str,
        latency_per_token: float,
        max_concurrent: int,
        faults: Faults | None = None,
        serve_info: bool = True,
        info_extra: dict | None = None,
        max_batch: int | None = None,
    ):
        self.model_id = model_id
        self.latency_per_token = latency_per_token
        self.max_concurrent = max_concurrent
        self.max_batch = max_batch or max_concurrent
        self.faults = faults or Faults()
        self.serve_info = serve_info
        self.info_extra = info_extra or {}
        self.in_flight = 0  # admitted: queued or generating
        self.running = 0  # generating: the batch
        self._batch = asyncio.Semaphore(self.max_batch)
        self._seen: collections.Counter[str] = collections.Counter()
        self._started = time.monotonic()
        self._last_change = self._started
        self._busy_seq_s = 0.0
        self._first_request: float | None = None
        self._last_done: float | None = None
        # The last moment every slot was busy, and the integral then: what follows is the
        # drain at the end of a shard (no request left to send).
        self._last_full: float | None = None
        self._busy_at_last_full = 0.0
        # Request counters, served at GET /stats so tests can see what was actually sent.
        self.stats = {
            "requests": 0,
            "ok": 0,
            "overloaded": 0,
            "validation": 0,
            "tokens": 0,
            "repeats": 0,
            "disconnected": 0,
            "peak_in_flight": 0,
            "injected": {"overloaded": 0, "unavailable": 0, "reset": 0, "hang": 0},
            "routes": {},
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 2**20)
        routes = [
            web.get("/health", self.health),
            web.get("/stats", self.get_stats),
            web.get("/v1/models", self.models),
            web.post("/generate", self.generate),
            web.post("/", self.compat_generate),
            web.post("/v1/completions", self.completions),
            web.post("/v1/chat/completions", self.chat_completions),
        ]
        if self.serve_info:
            routes.append(web.get("/info", self.info))
        app.add_routes(routes)
        return app

    # --- the saturation integral ----------------------------------------------------------

    def _tick(self) -> float:
        now = time.monotonic()
        self._busy_seq_s += self.running * (now - self._last_change)
        self._last_change = now
        return now

    def _start(self) -> None:
        """A sequence joins the batch."""
        now = self._tick()
        if self._first_request is None:
            self._first_request = now
        self.running += 1
        if self.running == self.max_batch:
            self._last_full, self._busy_at_last_full = now, self._busy_seq_s

    def _finish(self) -> None:
        self._last_done = self._tick()
        self.running -= 1

    async def _generate(self, seconds: float) -> None:
        """Hold a batch slot for `seconds` (waiting for one first)."""
        async with self._batch:
            self._start()
            try:
                if seconds > 0:
                    await asyncio.sleep(seconds)
            finally:
                self._finish()

    # --- plain routes ----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def info(self, request: web.Request) -> web.Response:
        info = {
            "model_id": self.model_id,
            "model_sha": None,
            "model_dtype": None,
            "max_concurrent_requests": self.max_concurrent,
            "max_input_tokens": MAX_INPUT_TOKENS,
            "max_total_tokens": MAX_TOTAL_TOKENS,
            "version": cosmopedia.__version__,
            "sha": None,
            "docker_label": None,
            "engine": "dummy",
            "latency_per_token_s": self.latency_per_token,
        }
        if self.max_batch != self.max_concurrent:
            info["max_batch_size"] = self.max_batch
        if self.faults.active:
            info["faults"] = self.faults.as_dict()
        return web.json_response({**info, **self.info_extra})

    async def get_stats(self, request: web.Request) -> web.Response:
        """Counters, and `busy_seq_s`: the integral of in-flight sequences over `clock_s`
        (seconds since start-up); `first_request_s`/`last_done_s` bound the busy period,
        `last_full_s`/`busy_at_last_full_s` mark when all slots were last busy."""
        now = self._tick()

        def clock(t: float | None) -> float | None:
            return None if t is None else t - self._started

        return web.json_response(
            {
                **self.stats,
                "in_flight": self.in_flight,
                "running": self.running,
                "admission_limit": self.max_concurrent,
                "batch_capacity": self.max_batch,
                "busy_seq_s": self._busy_seq_s,
                "clock_s": now - self._started,
                "first_request_s": clock(self._first_request),
                "last_done_s": clock(self._last_done),
                "last_full_s": clock(self._last_full),
                "busy_at_last_full_s": self._busy_at_last_full,
                "server": self.info_extra,
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.model_id, "object": "model", "created": 0, "owned_by": "cosmopedia"}
        card["max_model_len"] = MAX_TOTAL_TOKENS
        return web.json_response({"object": "list", "data": [card]})

    # --- generation routes -----------------------------------------------------------------

    async def generate(self, request: web.Request) -> web.Response:
        return await self._handle(request, "generate")

    async def compat_generate(self, request: web.Request) -> web.Response:
        return await self._handle(request, "compat")

    async def completions(self, request: web.Request) -> web.Response:
        return await self._handle(request, "completions")

    async def chat_completions(self, request: web.Request) -> web.Response:
        return await self._handle(request, "chat")

    async def _handle(self, request: web.Request, api: str) -> web.Response:
        openai = api in ("completions", "chat")
        # Counted once its body is in: a client killed mid-send made no request.
        raw = await request.read()
        self.stats["requests"] += 1
        self.stats["routes"][api] = self.stats["routes"].get(api, 0) + 1
        request_hash = hashlib.sha256(api.encode() + b"\0" + raw).hexdigest()
        occurrence = self._seen[request_hash]
        self._seen[request_hash] += 1
        self.stats["repeats"] += occurrence > 0
        if self.faults.crash_after and self.stats["requests"] >= self.faults.crash_after:
            print(
                f"dummy engine: simulated crash at request {self.stats['requests']}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(CRASH_EXIT_CODE)
        # TGI rejects at once, rather than queueing, above its concurrency limit.
        if self.in_flight >= self.max_concurrent:
            self.stats["overloaded"] += 1
            return _error(RequestError(429, "overloaded", "Model is overloaded"), openai)
        fault = self.faults.draw(request_hash, occurrence)
        if fault is not None:
            self.stats["injected"][fault] += 1
        if fault == "overloaded":
            return _error(RequestError(429, "overloaded", "Model is overloaded"), openai)
        if fault == "unavailable":
            return _error(RequestError(503, "unavailable", "Service unavailable"), openai)
        if fault == "reset":
            _reset_connection(request)
            return web.Response(status=500)  # never delivered: the connection is gone

        self.in_flight += 1
        self.stats["peak_in_flight"] = max(self.stats["peak_in_flight"], self.in_flight)
        try:
            if fault == "hang":
                # A stuck sequence: it answers nothing until the client gives up (the
                # handler is then cancelled).
                await self._generate(MAX_HANG_S)
                return web.Response(status=504)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if api == "chat":
                inputs, params, max_new_tokens, seed = self._parse_chat(body)
            elif api == "completions":
                inputs, params, max_new_tokens, seed = self._parse_completions(body)
            else:
                inputs, params, max_new_tokens, seed = parse_request(body)
            text, n_tokens, finish_reason = generate_text(inputs, seed, max_new_tokens)
            await self._generate(self.latency_per_token * n_tokens)
        except RequestError as exc:
            self.stats["validation"] += exc.status in (400, 422)
            return _error(exc, openai)
        except asyncio.CancelledError:
            self.stats["disconnected"] += 1  # the client left (timeout, killed job)
            raise
        finally:
            self.in_flight -= 1

        self.stats["ok"] += 1
        self.stats["tokens"] += n_tokens
        prompt_tokens = count_tokens(inputs)
        if openai:
            return self._openai_response(api, text, n_tokens, prompt_tokens, finish_reason)
        if params.get("return_full_text"):
            text = inputs + text
        response: dict = {"generated_text": text}
        if params.get("details"):
            response["details"] = {
                "finish_reason": finish_reason,
                "generated_tokens": n_tokens,
                "seed": seed,
                "prefill": [],
                "tokens": [],
            }
        headers = {"x-generated-tokens": str(n_tokens), "x-prompt-tokens": str(prompt_tokens)}
        return web.json_response([response] if api == "compat" else response, headers=headers)

    def _check_openai_body(self, body) -> dict:
        if not isinstance(body, dict):
            raise OpenAIError(400, "BadRequestError", "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.model_id:
            raise OpenAIError(404, "NotFoundError", f"The model `{model}` does not exist.")
        if body.get("stream"):
            raise OpenAIError(400, "BadRequestError", "the dummy engine does not stream")
        if body.get("n") not in (None, 1):
            raise OpenAIError(400, "BadRequestError", "the dummy engine answers n=1 only")
        return body

    def _parse_completions(self, body) -> tuple[str, dict, int, int | None]:
        body = self._check_openai_body(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise OpenAIError(400, "BadRequestError", "`prompt` must be a string")
        try:
            return parse_request({"inputs": prompt, "parameters": _openai_parameters(body)})
        except RequestError as exc:
            raise _openai_validation(exc) from None

    def _parse_chat(self, body) -> tuple[str, dict, int, int | None]:
        body = self._check_openai_body(body)
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(
                isinstance(m, dict)
                and m.get("role") in CHAT_ROLES
                and isinstance(m.get("content"), str)
                for m in messages
            )
        ):
            raise OpenAIError(
                400, "BadRequestError", "`messages` must be a non-empty list of role/content"
            )
        if not any(m["content"].strip() for m in messages):
            raise OpenAIError(400, "BadRequestError", "the messages have no content")
        prompt = apply_chat_template(messages)
        try:
            return parse_request({"inputs": prompt, "parameters": _openai_parameters(body)})
        except RequestError as exc:
            raise _openai_validation(exc) from None

    def _openai_response(
        self, api: str, text: str, n_tokens: int, prompt_tokens: int, finish_reason: str
    ) -> web.Response:
        reason = "length" if finish_reason == "length" else "stop"
        choice: dict = {"index": 0, "logprobs": None, "finish_reason": reason}
        if api == "chat":
            choice["message"] = {"role": "assistant", "content": text}
            kind, prefix = "chat.completion", "chatcmpl"
        else:
            choice["text"] = text
            kind, prefix = "text_completion", "cmpl"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_tokens,
            "total_tokens": prompt_tokens + n_tokens,
        }
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        return web.json_response(
            {
                "id": f"{prefix}-{digest}",
                "object": kind,
                "created": 0,
                "model": self.model_id,
                "choices": [choice],
                "usage": usage,
            }
        )


def _reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP reset, as a crashing proxy or engine would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER on, timeout 0: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _error(exc: RequestError, openai: bool = False) -> web.Response:
    if openai:
        kind = exc.error_type if isinstance(exc, OpenAIError) else exc.error_type.title()
        body = {"error": {"message": str(exc), "type": kind, "param": None, "code": exc.status}}
        return web.json_response(body, status=exc.status)
    return web.json_response({"error": str(exc), "error_type": exc.error_type}, status=exc.status)


# --- command line ------------------------------------------------------------------------


def add_engine_options(parser, prefix: str = "") -> None:
    """Simulation options; `prefix` ("dummy-") keeps them apart from a mimicked engine's."""
    parser.add_argument(
        f"--{prefix}latency-per-token",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds slept per generated token (makes concurrency observable)",
    )
    parser.add_argument(f"--{prefix}fault-seed", type=int, default=0, metavar="N")
    for name, what in (
        ("429", "answer 429 overloaded"),
        ("503", "answer 503 unavailable"),
        ("reset", "reset the connection"),
        ("hang", "never answer (until the client leaves)"),
    ):
        parser.add_argument(
            f"--{prefix}fault-{name}",
            type=float,
            default=0.0,
            metavar="RATE",
            help=f"share of requests to {what}",
        )
    parser.add_argument(
        f"--{prefix}crash-after",
        type=int,
        default=0,
        metavar="N",
        help=f"exit with code {CRASH_EXIT_CODE} when request N arrives (0: never)",
    )
    parser.add_argument(
        f"--{prefix}startup-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds before the port opens (loading the model)",
    )
    parser.add_argument(
        f"--{prefix}startup-fatal",
        default=None,
        metavar="LINE",
        help="print LINE at start-up, then hang without ever serving (a fatal start error)",
    )


def engine_options(args, prefix: str = "") -> dict:
    """The simulation options parsed by `add_engine_options`, without the prefix."""
    attr = prefix.replace("-", "_")
    get = lambda name: getattr(args, f"{attr}{name}")  # noqa: E731
    faults = Faults(
        seed=get("fault_seed"),
        rate_429=get("fault_429"),
        rate_503=get("fault_503"),
        rate_reset=get("fault_reset"),
        rate_hang=get("fault_hang"),
        crash_after=get("crash_after"),
    )
    return {
        "latency_per_token": get("latency_per_token"),
        "faults": faults,
        "startup_delay": get("startup_delay"),
        "startup_fatal": get("startup_fatal"),
    }


def add_arguments(name: str, parser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-id", default="cosmopedia/dummy")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=128,
        metavar="N",
        help="requests in flight above which the server answers 429 overloaded",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=0,
        metavar="N",
        help="sequences generated at once, the other admitted requests queue (0: all)",
    )
    add_engine_options(parser)


def serve(
    server: DummyServer,
    host: str,
    port: int,
    startup_delay: float = 0.0,
    startup_fatal: str | None = None,
) -> None:
    """Run `server` until SIGTERM/SIGINT (after the simulated start-up)."""
    if startup_fatal is not None:
        print(startup_fatal, flush=True)
        time.sleep(MAX_HANG_S)
        return
    if startup_delay > 0:
        time.sleep(startup_delay)
    log.info("dummy engine serving %s on http://%s:%d", server.model_id, host, port)
    # run_app stops cleanly on SIGTERM/SIGINT, as a real engine should under a sidecar.
    # Handlers are cancelled when their client disconnects (a timeout, a killed job), so a
    # hung or abandoned request does not hold a sequence slot forever.
    web.run_app(
        server.app(),
        host=host,
        port=port,
        print=None,
        access_log=None,
        handler_cancellation=True,
    )


def main(args) -> int:
    from cosmopedia.errors import CliError

    options = engine_options(args)
    if options["latency_per_token"] < 0:
        raise CliError("--latency-per-token must be >= 0")
    if args.max_concurrent < 1 or args.max_batch < 0:
        raise CliError("--max-concurrent must be >= 1 and --max-batch >= 0")
    server = DummyServer(
        args.model_id,
        options["latency_per_token"],
        args.max_concurrent,
        options["faults"],
        max_batch=args.max_batch or None,
    )
    serve(server, args.host, args.port, options["startup_delay"], options["startup_fatal"])
    return 0

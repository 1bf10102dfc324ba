"""A stand-in LLM server speaking TGI's HTTP API, for the demo and the tests (no GPU, no model).

The text it "generates" is a pure function of the prompt, the seed and `max_new_tokens`:
it retells the seed material (the text between the prompt's first and last double quote)
sentence by sentence, each sentence kept verbatim and followed by filler sentences chosen
by a hash of that sentence's first content words. So near-identical prompts give near-identical texts
(MinHash near-duplicates), unrelated prompts share almost no n-grams, and a benchmark item
quoted in a seed survives into the generation. The seed only draws the length (long-tailed,
with some "short" texts for the cleaning step to drop) and an optional greeting opener.

Tokens: the dummy counts matches of `TOKEN_RE` (words and single punctuation marks); it
reports that count as `generated_tokens` and cuts at exactly `max_new_tokens` of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import random
import re

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


class DummyServer:
    def __init__(self, model_id: str, latency_per_token: float, max_concurrent: int):
        self.model_id = model_id
        self.latency_per_token = latency_per_token
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        # Request counters, served at GET /stats so tests can see what was actually sent.
        self.stats = {"requests": 0, "ok": 0, "overloaded": 0, "validation": 0, "tokens": 0}

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/info", self.info),
                web.get("/stats", self.get_stats),
                web.post("/generate", self.generate),
                web.post("/", self.compat_generate),
            ]
        )
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
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
        )

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.stats, "in_flight": self.in_flight})

    async def generate(self, request: web.Request) -> web.Response:
        return await self._handle(request, as_list=False)

    async def compat_generate(self, request: web.Request) -> web.Response:
        return await self._handle(request, as_list=True)

    async def _handle(self, request: web.Request, as_list: bool) -> web.Response:
        self.stats["requests"] += 1
        # TGI rejects at once, rather than queueing, above its concurrency limit.
        if self.in_flight >= self.max_concurrent:
            self.stats["overloaded"] += 1
            return _error(RequestError(429, "overloaded", "Model is overloaded"))
        self.in_flight += 1
        try:
            try:
                body = await request.json()
            except json.JSONDecodeError:
                body = None
            inputs, params, max_new_tokens, seed = parse_request(body)
            text, n_tokens, finish_reason = generate_text(inputs, seed, max_new_tokens)
            if self.latency_per_token > 0:
                await asyncio.sleep(self.latency_per_token * n_tokens)
        except RequestError as exc:
            self.stats[exc.error_type] = self.stats.get(exc.error_type, 0) + 1
            return _error(exc)
        finally:
            self.in_flight -= 1

        self.stats["ok"] += 1
        self.stats["tokens"] += n_tokens
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
        headers = {
            "x-generated-tokens": str(n_tokens),
            "x-prompt-tokens": str(count_tokens(inputs)),
        }
        return web.json_response([response] if as_list else response, headers=headers)


def _error(exc: RequestError) -> web.Response:
    return web.json_response({"error": str(exc), "error_type": exc.error_type}, status=exc.status)


def add_arguments(name: str, parser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-id", default="cosmopedia/dummy")
    parser.add_argument(
        "--latency-per-token",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds slept per generated token (makes concurrency observable)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=128,
        metavar="N",
        help="requests in flight above which the server answers 429 overloaded",
    )


def main(args) -> int:
    from cosmopedia.cli import CliError

    if args.latency_per_token < 0:
        raise CliError("--latency-per-token must be >= 0")
    if args.max_concurrent < 1:
        raise CliError("--max-concurrent must be >= 1")
    server = DummyServer(args.model_id, args.latency_per_token, args.max_concurrent)
    log.info("dummy engine serving %s on http://%s:%d", args.model_id, args.host, args.port)
    # run_app stops cleanly on SIGTERM/SIGINT, as a real engine should under a sidecar.
    web.run_app(server.app(), host=args.host, port=args.port, print=None, access_log=None)
    return 0

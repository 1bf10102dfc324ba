"""The dummy engine's "model": text as a pure function of the prompt, the seed and
`max_new_tokens`, its token count and its chat template.

The text retells the seed material (the text between the prompt's first and last double
quote) sentence by sentence, each sentence kept verbatim and followed by filler sentences
chosen by a hash of that sentence's first content words. So near-identical prompts give
near-identical texts (MinHash near-duplicates), unrelated prompts share almost no n-grams,
and a benchmark item quoted in a seed survives into the generation. The seed only draws
the length (long-tailed, with some "short" texts for the cleaning step to drop) and an
optional greeting opener.

Tokens: the dummy counts matches of `TOKEN_RE` (words and single punctuation marks); it
reports that count as `generated_tokens` and cuts at exactly `max_new_tokens` of them.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re

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


# The dummy's chat template (Jinja, as in a model's tokenizer_config.json). The server
# renders it in plain Python (`apply_chat_template`); a client given this file renders it
# with Jinja: the two must give the same text.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def apply_chat_template(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """`CHAT_TEMPLATE` rendered without Jinja."""
    text = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")

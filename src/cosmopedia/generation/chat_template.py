"""The chat template a prompt goes through, without any Hub access from the job.

`generation.chat_template` is one of

* null: prompts are sent as they are (a base model, or prompts already formatted);
* a path to a Jinja template file (e.g. copied from the model's tokenizer_config.json):
  the client renders each prompt as one user turn and sends the text, so every engine sees
  the same bytes and keeps every sampling parameter (TGI's /generate, /v1/completions);
* "model": the model's own template, found where the engine keeps it (`find`: the local
  Hugging Face cache or the model folder; a GGUF file's metadata for llamacpp), rendered
  by the client like a file: an error if it cannot be found;
* "server": prompts go as chat messages to `/v1/chat/completions` and the engine applies
  the template of the model it loaded. Its hash is read from the local Hugging Face cache
  (the weights were downloaded there beforehand) or the model folder; null if not found.

Rendering follows transformers' conventions (sandboxed Jinja, `trim_blocks`,
`lstrip_blocks`, `raise_exception`, `add_generation_prompt=True`). The template's
`bos_token` and `eos_token` are `generation.chat_template_tokens`: empty by default, as
TGI, vLLM and SGLang add the BOS token themselves when they tokenize a text (rendering it
too gives two); the tokenizer's own (`"<s>"` for Mixtral) to send what transformers'
`apply_chat_template(..., tokenize=False)` gives, as Cosmopedia's client did
(resources/chat_templates/README.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cosmopedia.hashing import sha256_text

SERVER = "server"
MODEL = "model"
# Modes in which the client renders the template and sends the text.
CLIENT_RENDERED = ("file", MODEL)
TEMPLATE_FILES = ("chat_template.jinja", "tokenizer_config.json")


class ChatTemplateError(ValueError):
    """The configured chat template cannot be used."""


@dataclass(frozen=True)
class ChatTemplate:
    mode: str | None  # None (raw prompts), "file", "model" or "server"
    sha256: str | None = None
    source: str | None = None
    text: str | None = None
    bos_token: str = ""  # the template's variables when the client renders it
    eos_token: str = ""

    def render(self, prompt: str) -> str:
        """The text sent for `prompt` (unchanged unless the client renders the template)."""
        if self.mode not in CLIENT_RENDERED:
            return prompt
        return _compiled(self.text).render(
            messages=[{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def record(self) -> dict | None:
        """For provenance and request keys (None for raw prompts)."""
        if self.mode is None:
            return None
        record = {"mode": self.mode, "sha256": self.sha256, "source": self.source}
        if self.mode in CLIENT_RENDERED:  # named as in generation.chat_template_tokens
            record |= {"bos": self.bos_token, "eos": self.eos_token}
        return record


_COMPILED: dict[str, object] = {}


def _compiled(text: str):
    if text not in _COMPILED:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        _COMPILED[text] = env.from_string(text)
    return _COMPILED[text]


def _template_from_config(path: Path) -> str | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _read_template(path: Path) -> str | None:
    if path.name.endswith(".jinja"):
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            return None
    return _template_from_config(path)


def find_model_template(model: str, revision: str) -> tuple[str | None, str | None]:
    """(template text, where it was found) of a model folder or a locally cached model."""
    if os.path.isdir(model):
        for name in TEMPLATE_FILES:
            text = _read_template(Path(model) / name)
            if text is not None:
                return text, f"{Path(model).name}/{name}"
        return None, None
    from huggingface_hub import try_to_load_from_cache

    for name in TEMPLATE_FILES:
        try:
            cached = try_to_load_from_cache(model, name, revision=revision)
        except ValueError:  # not a valid repository id
            return None, None
        if isinstance(cached, str):
            text = _read_template(Path(cached))
            if text is not None:
                return text, f"hf-cache:{model}@{revision}/{name}"
    return None, None


def load_chat_template(
    setting: str | None,
    model: str,
    revision: str,
    find: Callable[[str, str], tuple[str | None, str | None]] = find_model_template,
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> ChatTemplate:
    """The template of `generation.chat_template`. For "server" and "model",
    `find(model, revision)` looks up the model's own template: to record the hash of the one
    the engine applies, or to render it (each engine says where its model keeps it; by
    default the Hugging Face cache or the model folder). A template the client renders (a
    file, or "model") gets `bos_token` and `eos_token` (`generation.chat_template_tokens`)."""
    if setting is None:
        return ChatTemplate(None)
    if setting == SERVER:
        text, source = find(model, revision)
        if text is None:
            return ChatTemplate(SERVER, None, "engine (not found in the local cache)")
        return ChatTemplate(SERVER, sha256_text(text), source)
    if setting == MODEL:
        text, source = find(model, revision)
        if text is None:
            raise ChatTemplateError(
                f"chat_template model: no chat template found for {model!r} (the model's "
                "metadata, its folder or the local Hugging Face cache); give a template file"
            )
        template = ChatTemplate(MODEL, sha256_text(text), source, text, bos_token, eos_token)
    else:
        path = Path(setting)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ChatTemplateError(f"chat_template {setting!r}: {exc}") from exc
        template = ChatTemplate("file", sha256_text(text), path.name, text, bos_token, eos_token)
    try:
        template.render("test")
    except Exception as exc:  # noqa: BLE001 (any Jinja error)
        raise ChatTemplateError(f"chat_template {setting!r} does not render: {exc}") from exc
    return template

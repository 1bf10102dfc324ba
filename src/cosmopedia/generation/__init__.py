"""The generate step: prompts shard -> generations shard through LLM engine servers.

dummy/           the dummy engine's server (`cosmopedia serve-dummy`)
"""

#!/usr/bin/env python3
"""Regenerates the chat-template goldens (tests/data/chat_templates/<name>.json) with the reference:
the template text of each fetched tokenizer_config.json rendered by Python's jinja2 the way Hugging
Face's apply_chat_template does (sandboxed, trim_blocks, lstrip_blocks, loopcontrols, tojson,
raise_exception; bos_token/eos_token from the config). Never edit the goldens by hand.
    python3 tests/data/chat_templates/generate.py      (needs python3-jinja2; run
    tools/fetch-tokenizers.sh first)
The Llama 2 tokenizer's config carries no template; for it this script uses the chat template of
Hugging Face's meta-llama/Llama-2-7b-chat-hf tokenizer_config.json, spelled below (LLAMA2_CHAT)."""
import json
import os
import sys

import jinja2
import jinja2.ext
import jinja2.sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
TOKENIZERS = os.environ.get("EESCHED_TOKENIZERS_DIR", os.path.join(ROOT, "tokenizers"))

LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a prime."},
     {"role": "assistant", "content": "7"}, {"role": "user", "content": "Another one?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
     {"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "Why did the chicken cross the road?"}],
    [{"role": "user", "content": "  padded with spaces \n\n"}, {"role": "assistant", "content": "\n trimmed? \t"},
     {"role": "user", "content": "line one\nline two"}],
    [{"role": "system", "content": "Système: réponds en français. 你好 👋"}, {"role": "user", "content": "Ça va ? <b>bold</b> {\"json\": 1}"}],
    [{"role": "user", "content": "Think first."},
     {"role": "assistant", "content": "<think>\nThe user wants thought.\n</think>\n\nDone thinking."},
     {"role": "user", "content": "Again."}],
    [{"role": "user", "content": "Think first."},
     {"role": "assistant", "content": "<think>\nreasoning here\n</think>\n\nThe answer."}],
    [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
     {"role": "assistant", "content": "a2"}, {"role": "user", "content": "q3"}],
    [{"role": "user", "content": ""}],
]


def render(template, messages, add_generation_prompt, config):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    def token(key):
        v = config.get(key)
        return v.get("content") if isinstance(v, dict) else v
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=token("bos_token") or "", eos_token=token("eos_token") or "",
        unk_token=token("unk_token"), pad_token=token("pad_token"))


def main():
    for name in ["llama3", "llama3_1", "qwen3", "llama2"]:
        path = os.path.join(TOKENIZERS, name, "tokenizer_config.json")
        if not os.path.exists(path):
            sys.exit(f"generate: {path} missing; run tools/fetch-tokenizers.sh")
        config = json.load(open(path, encoding="utf-8"))
        template = config.get("chat_template") or (LLAMA2_CHAT if name == "llama2" else None)
        cases = []
        for messages in CONVERSATIONS:
            for agp in (False, True):
                try:
                    text = render(template, messages, agp, config)
                    cases.append({"messages": messages, "add_generation_prompt": agp, "text": text})
                except jinja2.exceptions.TemplateError as e:
                    cases.append({"messages": messages, "add_generation_prompt": agp, "error": str(e)})
        out = {"generator": f"jinja2 {jinja2.__version__} via tests/data/chat_templates/generate.py",
               "tokenizer": name, "template_from": "tokenizer_config.json" if config.get("chat_template") else
               "LLAMA2_CHAT in generate.py", "cases": cases}
        with open(os.path.join(HERE, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"generate: {name}.json ({len(cases)} cases)")


if __name__ == "__main__":
    main()

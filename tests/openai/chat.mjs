// The demo's application: a chat turn streamed through an OpenAI-compatible server with the
// official client, printed as it arrives.
//   node chat.mjs BASE_URL API_KEY MODEL "the user's message" [MAX_TOKENS]
import loadOpenAI from './openai_package.mjs';

const OpenAI = await loadOpenAI();
const [baseURL, apiKey, model, content, maxTokens] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const stream = await client.chat.completions.create({
  model,
  messages: [{ role: 'user', content }],
  max_tokens: Number(maxTokens || 48),
  stream: true,
  stream_options: { include_usage: true },
});
let usage;
process.stdout.write('assistant:');
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  process.stdout.write(chunk.choices[0]?.delta?.content ?? '');
}
process.stdout.write(`\n[${usage.prompt_tokens} prompt tokens, ${usage.completion_tokens} completion tokens]\n`);

// The pinned official client, from the cache tools/fetch-openai.sh fills.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const cache = process.env.EESCHED_NPM_CACHE || path.join(here, '..', '..', '.cache', 'npm');
const entry = path.join(cache, 'node_modules', 'openai', 'index.mjs');

export default async function loadOpenAI() {
  try {
    return (await import(pathToFileURL(entry).href)).default;
  } catch (e) {
    throw new Error(`the openai package is not at ${entry} (run tools/fetch-openai.sh): ${e.message}`);
  }
}

// Drives a running `kiln serve` with the official `cloudflare` and `openai` npm SDKs, used
// unchanged: only their base URL points at kiln. Run by scripts/test-sdks.sh, which starts the
// server with the tiny test Llama standing in for the default text-generation model.
//
//   KILN_BASE=http://127.0.0.1:PORT KILN_TOKEN=... node tests/sdk/sdk_test.mjs
//
// Prints one PASS line per check; exits 1 at the first failure, saying what went wrong.

import Cloudflare from 'cloudflare';
import OpenAI from 'openai';

const BASE = process.env.KILN_BASE;
const TOKEN = process.env.KILN_TOKEN;
if (!BASE || !TOKEN) {
  console.error('sdk_test: set KILN_BASE (e.g. http://127.0.0.1:8787) and KILN_TOKEN');
  process.exit(2);
}

const DEFAULT = '@hf/huggingfacetb/smollm2-135m-instruct';
const LLAMA = '@cf/meta/llama-3.1-8b-instruct';
const ACCOUNT = 'test-account';
// No retries: a retried 5xx or dropped connection would hide a server bug. Generous timeout:
// the first request may load the model.
const CLIENT_OPTS = { maxRetries: 0, timeout: 120_000 };

class CheckFailed extends Error {}

function check(cond, message) {
  if (!cond) throw new CheckFailed(message);
}

const show = (v) => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 600 ? `${s.slice(0, 600)}...` : s;
};

let passed = 0;
async function test(name, fn) {
  try {
    const note = await fn();
    passed += 1;
    console.log(`PASS ${name}${note ? ` (${note})` : ''}`);
  } catch (e) {
    console.error(`FAIL ${name}`);
    if (e instanceof CheckFailed) {
      console.error(`  ${e.message}`);
    } else {
      console.error(`  unexpected ${e?.constructor?.name ?? typeof e}: ${e?.stack ?? e}`);
      if (e?.status !== undefined) console.error(`  status: ${e.status}`);
      if (e?.error !== undefined) console.error(`  body: ${show(e.error)}`);
    }
    process.exit(1);
  }
}

/** Expects `promise` to reject with an instance of `cls`; returns the error. */
async function rejects(promise, cls, what) {
  try {
    const v = await promise;
    throw new CheckFailed(`${what}: expected ${cls.name}, got a result: ${show(v)}`);
  } catch (e) {
    if (e instanceof CheckFailed) throw e;
    check(
      e instanceof cls,
      `${what}: expected ${cls.name}, got ${e?.constructor?.name}: ${e?.message ?? e}`,
    );
    return e;
  }
}

/** The `data:` payloads of a text/event-stream body, one per event. */
function sseData(text) {
  const out = [];
  for (const event of text.replace(/\r\n/g, '\n').split('\n\n')) {
    const lines = event.split('\n').filter((l) => l.startsWith('data:'));
    if (lines.length === 0) continue;
    out.push(lines.map((l) => l.slice(5).replace(/^ /, '')).join('\n'));
  }
  return out;
}

/**
 * Checks a Workers AI stream: `{"response": "..."}` events, then one with `usage`, then
 * `[DONE]` last. Returns the concatenated text and the usage.
 */
function checkWorkersStream(text, maxTokens, what) {
  const data = sseData(text);
  check(data.length >= 2, `${what}: too few events: ${show(text)}`);
  check(data[data.length - 1] === '[DONE]', `${what}: does not end with [DONE]: ${show(text)}`);
  let response = '';
  let usage;
  for (const [i, d] of data.slice(0, -1).entries()) {
    check(d !== '[DONE]', `${what}: [DONE] before the end (event ${i})`);
    let v;
    try {
      v = JSON.parse(d);
    } catch (e) {
      throw new CheckFailed(`${what}: event ${i} is not JSON (${e.message}): ${show(d)}`);
    }
    check(typeof v.response === 'string', `${what}: event ${i} has no string response: ${d}`);
    check(usage === undefined, `${what}: event after the usage event: ${d}`);
    response += v.response;
    if (v.usage !== undefined) usage = v.usage;
  }
  check(usage !== undefined, `${what}: no usage event: ${show(text)}`);
  check(
    usage.completion_tokens === maxTokens,
    `${what}: usage.completion_tokens ${usage.completion_tokens}, expected ${maxTokens}: ${show(usage)}`,
  );
  check(
    Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0,
    `${what}: bad usage.prompt_tokens: ${show(usage)}`,
  );
  check(response.length > 0, `${what}: no text was streamed`);
  return { response, usage };
}

// ---------------------------------------------------------------------------------------
// Cloudflare SDK: client.ai.run() against /client/v4/accounts/{account_id}/ai/run/{model}.
// The SDK unwraps the envelope itself (`_thenUnwrap(obj => obj.result)`), so ai.run resolves
// to the envelope's `result`, and a non-2xx reply becomes one of its APIError classes carrying
// the envelope's `errors`.

const cf = new Cloudflare({ apiToken: TOKEN, baseURL: `${BASE}/client/v4`, ...CLIENT_OPTS });

await test('cloudflare: ai.run with a prompt returns result.response', async () => {
  const r = await cf.ai.run(DEFAULT, {
    account_id: ACCOUNT,
    prompt: 'Hello',
    max_tokens: 5,
    temperature: 0,
  });
  check(r && typeof r === 'object', `expected the unwrapped result object, got ${show(r)}`);
  check(typeof r.response === 'string', `result.response is not a string: ${show(r)}`);
  check(r.response.length > 0, `result.response is empty: ${show(r)}`);
  check(r.usage?.completion_tokens === 5, `usage.completion_tokens is not 5: ${show(r)}`);
  return `response ${show(r.response)}`;
});

await test('cloudflare: ai.run with messages returns result.response', async () => {
  const r = await cf.ai.run(DEFAULT, {
    account_id: ACCOUNT,
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Hi' },
    ],
    max_tokens: 5,
    temperature: 0,
  });
  check(typeof r?.response === 'string', `result.response is not a string: ${show(r)}`);
  check(r.usage?.completion_tokens === 5, `usage.completion_tokens is not 5: ${show(r)}`);
  return `response ${show(r.response)}`;
});

await test('cloudflare: a catalog name served by the stand-in model works too', async () => {
  const r = await cf.ai.run(LLAMA, { account_id: ACCOUNT, prompt: 'Hi', max_tokens: 3 });
  check(typeof r?.response === 'string', `result.response is not a string: ${show(r)}`);
});

await test('cloudflare: an unknown model is BadRequestError 400 with code 5007', async () => {
  const e = await rejects(
    cf.ai.run('@cf/nope/none', { account_id: ACCOUNT, prompt: 'Hello' }),
    Cloudflare.BadRequestError,
    'unknown model',
  );
  check(e instanceof Cloudflare.APIError, `not a Cloudflare.APIError: ${e}`);
  check(e.status === 400, `status ${e.status}, expected 400`);
  check(Array.isArray(e.errors), `errors is not an array: ${show(e.errors)}`);
  check(
    e.errors.some((x) => x.code === 5007),
    `no error with code 5007 in ${show(e.errors)}`,
  );
  return `message ${show(e.message)}`;
});

await test('cloudflare: a wrong token is AuthenticationError 401', async () => {
  const bad = new Cloudflare({
    apiToken: 'not-the-token',
    baseURL: `${BASE}/client/v4`,
    ...CLIENT_OPTS,
  });
  const e = await rejects(
    bad.ai.run(DEFAULT, { account_id: ACCOUNT, prompt: 'Hello', max_tokens: 1 }),
    Cloudflare.AuthenticationError,
    'wrong token',
  );
  check(e.status === 401, `status ${e.status}, expected 401`);
  check(
    e.errors.some((x) => x.code === 10000),
    `no error with code 10000 in ${show(e.errors)}`,
  );
});

// Streaming: the SDK's ai.run has no streaming support. It sends `stream: true` along in the
// body, but it parses a text/event-stream reply as one string and then unwraps `.result` from
// it, so it resolves to undefined; the package ships no SSE decoder for this API. So the stream
// is read raw: once through the SDK (its URL building and auth, `.asResponse()` for the
// untouched fetch Response) and once with plain fetch on the short route.

await test('cloudflare: ai.run stream:true via .asResponse() is a Workers AI SSE stream', async () => {
  const resp = await cf.ai
    .run(DEFAULT, { account_id: ACCOUNT, prompt: 'Hello', max_tokens: 5, temperature: 0, stream: true })
    .asResponse();
  if (resp.status !== 200) throw new CheckFailed(`status ${resp.status}: ${await resp.text()}`);
  const ct = resp.headers.get('content-type') ?? '';
  check(ct.startsWith('text/event-stream'), `content-type ${show(ct)}`);
  const { response } = checkWorkersStream(await resp.text(), 5, 'account route stream');
  return `streamed ${show(response)}`;
});

await test('fetch: POST /ai/run/<model> stream:true is a Workers AI SSE stream', async () => {
  const resp = await fetch(`${BASE}/ai/run/${DEFAULT}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 5,
      temperature: 0,
      stream: true,
    }),
  });
  if (resp.status !== 200) throw new CheckFailed(`status ${resp.status}: ${await resp.text()}`);
  const ct = resp.headers.get('content-type') ?? '';
  check(ct.startsWith('text/event-stream'), `content-type ${show(ct)}`);
  const { response } = checkWorkersStream(await resp.text(), 5, 'short route stream');
  return `streamed ${show(response)}`;
});

// ---------------------------------------------------------------------------------------
// OpenAI SDK against /v1 (and the account-scoped /client/v4/accounts/{id}/ai/v1).

const oa = new OpenAI({ apiKey: TOKEN, baseURL: `${BASE}/v1`, ...CLIENT_OPTS });
const CHAT = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say hello.' },
];

function checkChatCompletion(r, maxTokens, what) {
  check(r?.object === 'chat.completion', `${what}: object ${show(r?.object)}: ${show(r)}`);
  check(typeof r.id === 'string' && r.id.length > 0, `${what}: no id: ${show(r)}`);
  check(Array.isArray(r.choices) && r.choices.length === 1, `${what}: choices: ${show(r)}`);
  const c = r.choices[0];
  check(c.message?.role === 'assistant', `${what}: message.role: ${show(c)}`);
  check(typeof c.message?.content === 'string', `${what}: message.content not a string: ${show(c)}`);
  check(['stop', 'length'].includes(c.finish_reason), `${what}: finish_reason: ${show(c)}`);
  check(
    r.usage?.completion_tokens === maxTokens,
    `${what}: usage.completion_tokens ${r.usage?.completion_tokens}, expected ${maxTokens}: ${show(r.usage)}`,
  );
  check(
    r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens,
    `${what}: usage totals do not add up: ${show(r.usage)}`,
  );
  return c.message.content;
}

await test('openai: chat.completions.create', async () => {
  const r = await oa.chat.completions.create({
    model: LLAMA,
    messages: CHAT,
    max_tokens: 5,
    temperature: 0,
  });
  check(r.model === LLAMA, `model ${show(r.model)}, expected ${LLAMA}`);
  check(r.choices[0]?.finish_reason === 'length', `finish_reason: ${show(r.choices[0])}`);
  return `content ${show(checkChatCompletion(r, 5, 'chat'))}`;
});

await test('openai: chat.completions.create stream:true', async () => {
  const stream = await oa.chat.completions.create({
    model: LLAMA,
    messages: CHAT,
    max_tokens: 5,
    temperature: 0,
    stream: true,
  });
  let content = '';
  let chunks = 0;
  let finish;
  let usageChunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    check(chunk.object === 'chat.completion.chunk', `chunk object: ${show(chunk)}`);
    content += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    if (chunk.choices.length === 0) usageChunks += 1;
  }
  check(chunks >= 2, `only ${chunks} chunks`);
  check(content.length > 0, 'no content was streamed');
  check(finish === 'length', `finish_reason ${show(finish)}, expected "length"`);
  // OpenAI sends the choices-less usage chunk only with stream_options.include_usage; code
  // that reads chunk.choices[0].delta without `?.` would break on one.
  check(usageChunks === 0, 'a usage chunk came without stream_options.include_usage');
  const note = '';
  return `${chunks} chunks, content ${show(content)}${note}`;
});

await test('openai: chat.completions.create stream with include_usage', async () => {
  const stream = await oa.chat.completions.create({
    model: LLAMA,
    messages: CHAT,
    max_tokens: 5,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const last = chunks[chunks.length - 1];
  check(last !== undefined, 'no chunks');
  check(
    Array.isArray(last.choices) && last.choices.length === 0,
    `the usage chunk should have empty choices: ${show(last)}`,
  );
  check(last.usage?.completion_tokens === 5, `final usage: ${show(last.usage)}`);
  for (const c of chunks.slice(0, -1)) {
    check(c.usage == null, `usage before the final chunk: ${show(c)}`);
  }
  const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  check(content.length > 0, 'no content was streamed');
  return `usage ${show(last.usage)}`;
});

await test('openai: completions.create with a raw prompt', async () => {
  const r = await oa.completions.create({
    model: LLAMA,
    prompt: 'Once upon a time',
    max_tokens: 5,
    temperature: 0,
  });
  check(r?.object === 'text_completion', `object ${show(r?.object)}: ${show(r)}`);
  check(typeof r.choices?.[0]?.text === 'string', `choices[0].text: ${show(r)}`);
  check(r.choices[0].text.length > 0, `empty text: ${show(r)}`);
  check(r.usage?.completion_tokens === 5, `usage: ${show(r.usage)}`);
  return `text ${show(r.choices[0].text)}`;
});

await test('openai: completions.create stream:true', async () => {
  const stream = await oa.completions.create({
    model: LLAMA,
    prompt: 'Once upon a time',
    max_tokens: 5,
    temperature: 0,
    stream: true,
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  check(text.length > 0, 'no text was streamed');
  return `text ${show(text)}`;
});

await test('openai: models.list includes the llama name', async () => {
  const page = await oa.models.list();
  const ids = [];
  for await (const m of page) ids.push(m.id);
  check(ids.includes(LLAMA), `${LLAMA} not in ${show(ids)}`);
  check(ids.includes(DEFAULT), `${DEFAULT} not in ${show(ids)}`);
  return `${ids.length} models`;
});

await test('openai: a bad temperature is BadRequestError 400 naming temperature', async () => {
  const e = await rejects(
    oa.chat.completions.create({ model: LLAMA, messages: CHAT, max_tokens: 5, temperature: 9 }),
    OpenAI.BadRequestError,
    'temperature 9',
  );
  check(e.status === 400, `status ${e.status}, expected 400`);
  check(/temperature/.test(e.message), `message does not name temperature: ${show(e.message)}`);
  return `message ${show(e.message)}`;
});

await test('openai: an unknown model is BadRequestError 400', async () => {
  const e = await rejects(
    oa.chat.completions.create({ model: '@cf/nope/none', messages: CHAT, max_tokens: 5 }),
    OpenAI.BadRequestError,
    'unknown model',
  );
  check(e.status === 400, `status ${e.status}, expected 400`);
  return `message ${show(e.message)}`;
});

await test('openai: a wrong key is AuthenticationError 401', async () => {
  const bad = new OpenAI({ apiKey: 'not-the-token', baseURL: `${BASE}/v1`, ...CLIENT_OPTS });
  const e = await rejects(
    bad.chat.completions.create({ model: LLAMA, messages: CHAT, max_tokens: 1 }),
    OpenAI.AuthenticationError,
    'wrong key',
  );
  check(e.status === 401, `status ${e.status}, expected 401`);
});

await test('openai: the account-scoped base URL works', async () => {
  const acc = new OpenAI({
    apiKey: TOKEN,
    baseURL: `${BASE}/client/v4/accounts/acc/ai/v1`,
    ...CLIENT_OPTS,
  });
  const r = await acc.chat.completions.create({
    model: LLAMA,
    messages: CHAT,
    max_tokens: 5,
    temperature: 0,
  });
  const content = checkChatCompletion(r, 5, 'account-scoped chat');
  const page = await acc.models.list();
  check(page.data.some((m) => m.id === LLAMA), `models.list lacks ${LLAMA}`);
  return `content ${show(content)}`;
});

await test('openai: response_format json_object', async () => {
  const r = await oa.chat.completions.create({
    model: DEFAULT,
    messages: [{ role: 'user', content: 'Reply with a JSON object.' }],
    max_tokens: 200,
    seed: 3,
    response_format: { type: 'json_object' },
  });
  const c = r.choices?.[0];
  check(typeof c?.message?.content === 'string', `message.content: ${show(r)}`);
  check(['stop', 'length'].includes(c.finish_reason), `finish_reason: ${show(c)}`);
  if (c.finish_reason !== 'stop') {
    return `finish_reason length after ${r.usage?.completion_tokens} tokens: not parsed`;
  }
  let parsed;
  try {
    parsed = JSON.parse(c.message.content);
  } catch (e) {
    throw new CheckFailed(`content is not JSON (${e.message}): ${show(c.message.content)}`);
  }
  check(
    parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed),
    `content is not a JSON object: ${show(c.message.content)}`,
  );
  return `content ${show(c.message.content)}`;
});

console.log(`sdk_test: all ${passed} checks passed`);

// The signed-in session and every call to keyledger's public API (/v1/…, same origin).
//
// The credential lives in memory and in this tab's sessionStorage only (never localStorage,
// never a cookie); sign-out removes it. Secrets the API returns (api_key, webhook_secret,
// token) are handed to the caller and never stored here.

const STORAGE_KEY = 'keyledger.session';
const ACTOR_PATTERN = /^[\x20-\x7e]{1,128}$/;

export const session = {
  token: null, // the bearer credential: a service token (kls_…) or an agent key (cg_…)
  kind: null, // 'service' | 'agent'
  actor: '', // X-Actor: the person on whose behalf a service token acts (optional)
  scopes: new Set(), // the service token's scopes: manage, audit, admin, …
  tokenInfo: null, // this token's own record (GET /v1/tokens/self)
  self: null, // {agent, key} for an agent key
};

let onSignedOut = () => {};
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export class ApiError extends Error {
  constructor(status, body, headers) {
    const error = body?.error ?? {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.requestId = error.request_id || headers?.get('X-Request-Id') || null;
    this.details = Array.isArray(error.details) ? error.details : [];
    const retry = headers?.get('Retry-After');
    this.retryAfter = retry ? Number(retry) : null;
  }
}

export function credentialKind(token) {
  if (/^cg_[0-9a-f]{32}$/.test(token)) {
    return 'agent';
  }
  if (/^kls_[A-Za-z0-9_-]{20,}$/.test(token)) {
    return 'service';
  }
  return null;
}

export function validActor(actor) {
  return actor === '' || ACTOR_PATTERN.test(actor);
}

// Works outside secure contexts too (crypto.randomUUID does not).
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function can(scope) {
  return session.kind === 'service' && session.scopes.has(scope);
}

// --- Storage -----------------------------------------------------------------------------

export function restoreSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
    if (saved && typeof saved.token === 'string' && credentialKind(saved.token)) {
      session.token = saved.token;
      session.kind = credentialKind(saved.token);
      session.actor = typeof saved.actor === 'string' && validActor(saved.actor) ? saved.actor : '';
      return true;
    }
  } catch {
    // Unreadable storage: start signed out.
  }
  return false;
}

function saveSession() {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ token: session.token, actor: session.actor }));
}

export function signOut(reason) {
  sessionStorage.removeItem(STORAGE_KEY);
  session.token = null;
  session.kind = null;
  session.actor = '';
  session.scopes = new Set();
  session.tokenInfo = null;
  session.self = null;
  onSignedOut(reason);
}

// --- Requests ----------------------------------------------------------------------------

const NETWORK_RETRIES = 1;

// One API call. Returns {status, data, headers}; throws ApiError on a non-2xx answer.
// POSTs carry an Idempotency-Key; a request lost in transit is retried once with the same
// key, so it never takes effect twice. A 401 signs out, but not while `signingIn` (the
// caller reports it).
export async function request(method, path, { body, query, credential, signingIn = false } = {}) {
  const token = credential ?? session.token;
  const headers = { Accept: 'application/json', Authorization: `Bearer ${token}` };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
  }
  if (method === 'POST') {
    headers['Idempotency-Key'] = randomId();
  }
  if (method !== 'GET' && session.actor && credentialKind(token) === 'service') {
    headers['X-Actor'] = session.actor;
  }
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== '') {
        params.set(k, String(v));
      }
    }
    const qs = params.toString();
    if (qs) {
      url += `?${qs}`;
    }
  }
  const init = {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
  };
  let response;
  for (let attempt = 0; ; attempt += 1) {
    try {
      response = await fetch(url, init);
      break;
    } catch (err) {
      if (attempt >= NETWORK_RETRIES || (method !== 'GET' && !headers['Idempotency-Key'])) {
        const e = new ApiError(0, { error: { message: `keyledger did not answer (${err.message})` } });
        e.code = 'network_error';
        throw e;
      }
    }
  }
  let data = null;
  if ((response.headers.get('Content-Type') || '').includes('application/json')) {
    data = await response.json().catch(() => null);
  }
  if (!response.ok) {
    const err = new ApiError(response.status, data, response.headers);
    if (response.status === 401 && credential === undefined && session.token === token && !signingIn) {
      signOut('keyledger no longer accepts this credential (it may have been revoked). Sign in again.');
    }
    throw err;
  }
  return { status: response.status, data, headers: response.headers, replayed: response.headers.get('Idempotent-Replayed') === 'true' };
}

export const api = {
  get: async (path, query) => (await request('GET', path, { query })).data,
  post: (path, body = {}) => request('POST', path, { body }),
  put: async (path, body) => (await request('PUT', path, { body })).data,
};

export const path = (strings, ...ids) =>
  strings.reduce((out, s, i) => out + s + (i < ids.length ? encodeURIComponent(ids[i]) : ''), '');

// --- Sign-in and scopes ------------------------------------------------------------------

// Finds what the credential may do: a service token reads its own record and scopes from
// GET /v1/tokens/self (any scope may), an agent key its agent and key from GET /v1/self.
async function discoverScopes() {
  session.scopes = new Set();
  session.tokenInfo = null;
  session.self = null;
  if (session.kind === 'agent') {
    session.self = (await request('GET', '/v1/self', { signingIn: true })).data;
    return;
  }
  const { data } = await request('GET', '/v1/tokens/self', { signingIn: true });
  session.tokenInfo = data;
  session.scopes = new Set(data.scopes || []);
}

// Signs in with `token`; throws ApiError (401: not accepted) or Error (bad format).
export async function signIn(token, actor) {
  const kind = credentialKind(token);
  if (!kind) {
    throw new Error('That is neither a service token (kls_…) nor an agent key (cg_ and 32 hex characters).');
  }
  session.token = token;
  session.kind = kind;
  session.actor = kind === 'service' ? actor : '';
  try {
    await discoverScopes();
  } catch (err) {
    session.token = null;
    session.kind = null;
    throw err;
  }
  saveSession();
}

// After a reload: the saved credential, checked again.
export async function resume() {
  try {
    await discoverScopes();
    return true;
  } catch (err) {
    if (err.status === 401) {
      signOut('keyledger no longer accepts the saved credential. Sign in again.');
      return false;
    }
    throw err;
  }
}

// Every page of a cursor-paged list (audit events), up to `maxPages`.
export async function allPages(path, query, field, maxPages = 50) {
  const items = [];
  let cursor;
  for (let page = 0; page < maxPages; page += 1) {
    const data = await api.get(path, { ...query, cursor });
    items.push(...(data[field] || []));
    cursor = data.next_cursor;
    if (!cursor) {
      return { items, complete: true };
    }
  }
  return { items, complete: false };
}

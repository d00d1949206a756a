// mend's API as the page uses it: the same endpoints and token as the CLI. The token is asked for only
// when a change answers 401, and kept in this tab's sessionStorage only.

const TOKEN_KEY = 'mend.token';

/** An error from the API, with its status and mend's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === 'string') message = body.error;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, message);
}

/** GET `path`, answered with JSON. */
export async function get(path, { signal } = {}) {
  const response = await fetch(path, { headers: { Accept: 'application/json' }, signal });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** Asks for the token (a dialog) and keeps it for this tab; false when the person cancels. */
let askToken = async () => false;

/** Sets how the token is asked for (the page's dialog). */
export function onTokenNeeded(ask) {
  askToken = ask;
}

/** POST `path` (a change) with an optional JSON `body`; asks for the token on 401 and tries again. */
export async function post(path, body) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method: 'POST',
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.ok) return response.json();
    const error = await errorOf(response);
    const refused = response.status === 401 || (response.status === 403 && token && /token/.test(error.message));
    if (!refused || attempt >= 2) throw error;
    sessionStorage.removeItem(TOKEN_KEY);
    const given = await askToken(response.status === 401 ? 'This mend needs its API token (api.token) to make changes.' : 'The token was refused: enter it again.');
    if (!given) throw error;
    sessionStorage.setItem(TOKEN_KEY, given);
  }
}

/** Runs a PromQL range query: Prometheus' answer's `data`. */
export async function queryRange(query, start, end, step) {
  const form = new URLSearchParams({ query, start: String(start), end: String(end), step: String(step) });
  const response = await fetch('/api/v1/query_range', {
    method: 'POST',
    headers: { Accept: 'application/json', 'Content-Type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  });
  const answer = await response.json().catch(() => null);
  if (!answer) throw new ApiError(response.status, `${response.status} ${response.statusText}`);
  if (answer.status !== 'success') throw new ApiError(response.status, answer.error || answer.errorType || 'query failed');
  return answer.data;
}

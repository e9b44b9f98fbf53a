// What both pages share: the API key, calls to this gateway, and how a refusal is explained.
// The key is kept for this tab only (sessionStorage): never in a page, a URL or a cookie.

const KEY = "mnist-gateway-api-key";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => (value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY)),
};

export class GatewayError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A call to the gateway with the tab's key; the parsed JSON body and the response's headers, or a
// GatewayError carrying the gateway's own message.
export async function call(path, { method = "GET", body = null } = {}) {
  const headers = { Accept: "application/json" };
  if (apiKey.get()) headers.Authorization = `Bearer ${apiKey.get()}`;
  if (body !== null) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === null ? null : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new GatewayError(0, "the gateway cannot be reached");
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const message = payload && typeof payload.message === "string" ? payload.message : `HTTP ${response.status}`;
    throw new GatewayError(response.status, message);
  }
  return { payload, headers: response.headers };
}

// One sentence for a person: what went wrong and what to do.
export function explain(error) {
  if (error.status === 401) {
    return apiKey.get()
      ? `The gateway refused this key: ${error.message}. Enter another one above.`
      : "This gateway needs an API key: enter yours above (it is kept for this tab only).";
  }
  if (error.status === 403) return `This key may not do that: ${error.message}`;
  if (error.status === 429) return `Too many requests for this key: ${error.message}`;
  return error.message || String(error);
}

// The key form of a page: set or forget the tab's key; onChange runs after either.
export function setUpKeyForm(onChange) {
  const form = document.getElementById("key-form");
  const input = document.getElementById("key");
  const status = document.getElementById("key-status");
  const show = () => {
    status.textContent = apiKey.get() ? "A key is set for this tab." : "No key set.";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey.set(input.value.trim());
    input.value = "";
    show();
    onChange?.();
  });
  document.getElementById("forget-key").addEventListener("click", () => {
    apiKey.set("");
    show();
    onChange?.();
  });
  show();
}

export function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

export const percent = (value, digits = 1) => `${(100 * value).toFixed(digits)}%`;

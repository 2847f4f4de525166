// DOM helpers. Every piece of data reaches the page as a text node or an attribute value:
// nothing here parses HTML, so nothing the API returns can become markup or script.

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'open', 'indeterminate']);

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setProps(el, props) {
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name === 'style' || name === 'innerHTML' || name === 'outerHTML') {
      throw new Error(`h(): "${name}" is not allowed (CSP and escaping)`);
    }
    if (name === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (name === 'text') {
      el.textContent = String(value);
    } else if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (PROPERTIES.has(name)) {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

// Appends children, skipping null, undefined and false (the DOM's own append writes "null").
export function add(el, ...children) {
  return append(el, children);
}

// Replaces an element's children, skipping null, undefined and false.
export function put(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// h('button', {class: 'primary', onclick}, 'Save') → <button class="primary">Save</button>
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  return append(el, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';

export function svg(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  return append(el, children);
}

let lastId = 0;
export function uid(prefix = 'id') {
  lastId += 1;
  return `${prefix}-${lastId}`;
}

// Lengths as the server counts them: in characters (code points), not UTF-16 units.
export function charCount(text) {
  return [...text].length;
}

// --- Formatting --------------------------------------------------------------------------

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const dateTimeSeconds = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

export function time(iso, { relativeTo, seconds = false } = {}) {
  if (!iso) {
    return h('span', { class: 'muted' }, '—');
  }
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) {
    return h('span', {}, iso);
  }
  const label = relativeTo ? ago(date, relativeTo) : (seconds ? dateTimeSeconds : dateTime).format(date);
  return h('time', { datetime: iso, title: iso }, label);
}

function ago(date, now) {
  const seconds = Math.round((date.getTime() - now.getTime()) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) {
    return relative.format(seconds, 'second');
  }
  if (abs < 3600) {
    return relative.format(Math.round(seconds / 60), 'minute');
  }
  if (abs < 86400) {
    return relative.format(Math.round(seconds / 3600), 'hour');
  }
  return relative.format(Math.round(seconds / 86400), 'day');
}

export function badge(text, kind = text) {
  return h('span', { class: `badge badge-${String(kind).replace(/[^a-z0-9_-]/gi, '')}` }, text);
}

export function code(text) {
  return h('code', {}, text);
}

export function link(href, ...children) {
  return h('a', { href }, ...children);
}

export function agentHref(agentId, tab) {
  return `#/agents/${encodeURIComponent(agentId)}${tab ? `/${tab}` : ''}`;
}

// --- Building blocks -----------------------------------------------------------------------

// A real <table> with header cells. columns: [{label, cell(row) → node|string, class}]
export function table({ caption, columns, rows, empty = 'Nothing here yet.', rowProps }) {
  const wrap = h('div', { class: 'table-wrap' });
  if (!rows.length) {
    add(wrap, h('p', { class: 'empty' }, empty));
    return wrap;
  }
  add(wrap, 
    h(
      'table',
      {},
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h(
        'tbody',
        {},
        rows.map((row) =>
          h(
            'tr',
            rowProps ? rowProps(row) : {},
            columns.map((c, i) => {
              const content = c.cell(row);
              return i === 0 && c.rowHeader
                ? h('th', { scope: 'row', class: c.class }, content)
                : h('td', { class: c.class, 'data-label': c.label }, content);
            }),
          ),
        ),
      ),
    ),
  );
  return wrap;
}

// A definition list from [[term, value], …]; null values are skipped.
export function facts(pairs) {
  return h(
    'dl',
    { class: 'facts' },
    pairs.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))),
  );
}

export function notice(kind, ...children) {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...children);
}

// Describes an ApiError (or any error) for a person: message, code and request id.
export function errorNotice(err, prefix) {
  const parts = [prefix ? `${prefix}: ` : '', err.message || String(err)];
  const meta = [];
  if (err.code) {
    meta.push(`code ${err.code}`);
  }
  if (err.status) {
    meta.push(`HTTP ${err.status}`);
  }
  if (err.requestId) {
    meta.push(`request ${err.requestId}`);
  }
  return notice('error', ...parts, meta.length ? h('span', { class: 'meta' }, ` (${meta.join(', ')})`) : null);
}

// A labelled form field with a hint and an error slot next to it.
// Returns {wrap, input, error, setError(message)}.
export function field({ label, name, type = 'text', hint, control, required, optional, ...rest }) {
  const id = uid(`f-${name}`);
  const hintText = optional ? `Optional.${hint ? ` ${hint}` : ''}` : hint;
  const hintId = hintText ? `${id}-hint` : null;
  const errorId = `${id}-error`;
  let input = control;
  if (!input) {
    input = type === 'textarea' ? h('textarea', { rows: 3 }) : h('input', { type });
  }
  setProps(input, { id, name, ...rest });
  input.setAttribute('aria-describedby', [hintId, errorId].filter(Boolean).join(' '));
  if (required) {
    input.setAttribute('aria-required', 'true');
  }
  const error = h('p', { class: 'field-error', id: errorId, hidden: true });
  const wrap = h(
    'div',
    { class: 'field' },
    // "(optional)" stays outside the <label>, so the field's name is exactly "Label", not
    // "Label (optional)"; the hint says it for screen readers.
    optional
      ? h('div', { class: 'label-row' }, h('label', { for: id }, label), h('span', { class: 'optional', 'aria-hidden': 'true' }, '(optional)'))
      : h('label', { for: id }, label),
    input,
    hintText ? h('p', { class: 'hint', id: hintId }, hintText) : null,
    error,
  );
  const setError = (message) => {
    error.textContent = message || '';
    error.hidden = !message;
    if (message) {
      input.setAttribute('aria-invalid', 'true');
    } else {
      input.removeAttribute('aria-invalid');
    }
  };
  return { wrap, input, error, setError };
}

export function select(options, value) {
  return h(
    'select',
    {},
    options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)),
  );
}

// Disables a button while `work` runs; returns work's result.
export async function busy(button, work) {
  const before = button.disabled;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    button.disabled = before;
    button.removeAttribute('aria-busy');
  }
}

// Runs `fn` over `items` with at most `limit` calls in flight; results in input order.
export async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

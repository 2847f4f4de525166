// Service tokens (scope admin): list, create (the token shown once), revoke.

import { api, path, session, signOut } from './api.js';
import { formDialog, showSecret } from './dialogs.js';
import { badge, busy, charCount, code, errorNotice, field, h, notice, put, table, time } from './dom.js';

const SCOPES = [
  ['manage', 'register agents; create, rotate, revoke keys; set tiers'],
  ['verify', 'POST /v1/verify (API gateways)'],
  ['audit', 'read the audit log, usage and webhook deliveries'],
  ['report_leaks', 'POST /v1/leaks (secret scanners)'],
  ['admin', 'manage service tokens'],
];

export async function renderTokens(view) {
  const flash = h('div', { class: 'flash', role: 'status', 'aria-live': 'polite' });
  const results = h('div', { class: 'results' });
  const say = (...parts) => put(flash, ...parts);

  const name = field({ label: 'Token name', name: 'name', required: true, autocomplete: 'off', placeholder: 'gateway-eu', hint: '1 to 100 characters; recorded as the actor of what the token does.' });
  const scopeError = h('p', { class: 'field-error', id: 'scopes-error', hidden: true });
  const scopeBoxes = SCOPES.map(([scope, what]) => {
    const id = `scope-${scope}`;
    const box = h('input', { type: 'checkbox', id, name: 'scopes', value: scope });
    return [box, h('div', { class: 'choice' }, box, h('label', { for: id }, code(scope), ` \u2014 ${what}`))];
  });
  const scopes = h('fieldset', { 'aria-describedby': 'scopes-error' }, h('legend', {}, 'Scopes'), scopeBoxes.map(([, row]) => row), scopeError);
  const create = h('button', { type: 'submit', class: 'primary' }, 'Create token');
  const form = h('form', { class: 'card', novalidate: true, 'aria-labelledby': 'create-token-h' }, h('h2', { id: 'create-token-h' }, 'Create a service token'), name.wrap, scopes, h('div', { class: 'actions' }, create));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const tokenName = name.input.value.trim();
    const chosen = scopeBoxes.filter(([box]) => box.checked).map(([box]) => box.value);
    const n = charCount(tokenName);
    name.setError(n < 1 || n > 100 || /[\u0000-\u001f\u007f-\u009f]/.test(tokenName) ? 'Token name must be 1 to 100 characters without control characters.' : '');
    scopeError.textContent = chosen.length ? '' : 'Choose at least one scope.';
    scopeError.hidden = Boolean(chosen.length);
    if (!chosen.length || name.input.getAttribute('aria-invalid')) {
      return;
    }
    let created;
    try {
      created = await busy(create, () => api.post('/v1/tokens', { name: tokenName, scopes: chosen }));
    } catch (err) {
      for (const d of err.details || []) {
        if (d.field === 'name') {
          name.setError(`Token name: ${d.message}`);
        } else {
          scopeError.textContent = `${d.field}: ${d.message}`;
          scopeError.hidden = false;
        }
      }
      say(errorNotice(err, 'No token was created'));
      return;
    }
    name.input.value = '';
    for (const [box] of scopeBoxes) {
      box.checked = false;
    }
    const { token: secret, ...info } = created.data;
    created.data.token = undefined;
    say(notice('success', `Token \u201c${info.name}\u201d created.`));
    const refreshed = load();
    if (secret) {
      await showSecret({
        title: `Service token \u201c${info.name}\u201d`,
        secret,
        kind: 'token',
        facts: [
          ['Token ID', code(info.token_id)],
          ['Scopes', info.scopes.join(', ')],
        ],
      });
    } else {
      say(notice('info', 'This creation was a replay: the token is not shown again. Revoke it and create another.'));
    }
    await refreshed;
  });

  async function revoke(token) {
    const mine = session.tokenInfo?.token_id === token.token_id;
    const done = await formDialog({
      title: `Revoke service token \u201c${token.name}\u201d?`,
      intro: h(
        'p',
        {},
        'Every request with this token is refused from now on. This cannot be undone.',
        mine ? h('strong', {}, ' This is the token you are signed in with: you will be signed out.') : null,
      ),
      danger: true,
      onConfirm: () => api.post(path`/v1/tokens/${token.token_id}/revoke`, {}),
    });
    if (!done) {
      return;
    }
    if (mine) {
      signOut('You revoked the token you were signed in with.');
      return;
    }
    say(notice('success', `Token \u201c${token.name}\u201d revoked.`));
    await load();
  }

  async function load() {
    let tokens;
    try {
      tokens = (await api.get('/v1/tokens')).tokens || [];
    } catch (err) {
      put(results, errorNotice(err, 'Could not list the service tokens'));
      return;
    }
    tokens.sort((a, b) => (a.status === 'active') - (b.status === 'active') || b.created_at.localeCompare(a.created_at)).reverse();
    put(results, 
      table({
        caption: `${tokens.filter((t) => t.status === 'active').length} active of ${tokens.length} tokens`,
        columns: [
          {
            label: 'Name',
            cell: (t) => h('span', {}, t.name, session.tokenInfo?.token_id === t.token_id ? h('span', { class: 'badge badge-you' }, 'you') : null),
            rowHeader: true,
          },
          { label: 'Token', cell: (t) => h('span', {}, code(t.hint), h('br', {}), h('span', { class: 'muted small' }, t.token_id)) },
          { label: 'Scopes', cell: (t) => h('ul', { class: 'chips' }, (t.scopes || []).map((s) => h('li', {}, s))) },
          { label: 'Status', cell: (t) => badge(t.status) },
          { label: 'Created', cell: (t) => time(t.created_at) },
          { label: 'Revoked', cell: (t) => time(t.revoked_at) },
          {
            label: 'Actions',
            cell: (t) => (t.status === 'active' ? h('button', { type: 'button', class: 'danger-outline', onclick: () => revoke(t) }, 'Revoke') : ''),
          },
        ],
        rows: tokens,
        rowProps: (t) => ({ 'data-token-id': t.token_id }),
      }),
    );
  }

  put(view, 
    h('div', { class: 'page-header' }, h('h1', { tabindex: '-1' }, 'Service tokens')),
    h('p', { class: 'lead' }, 'Tokens for the platform\u2019s services and operators. Only their hashes are stored; a new token is shown once.'),
    flash,
    results,
    form,
  );
  await load();
}

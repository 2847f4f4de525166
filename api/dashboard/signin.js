// Sign-in: a service token (operators) or an agent's own cg_ key (its self view).

import { credentialKind, signIn, validActor } from './api.js';
import { busy, errorNotice, field, h, notice, put } from './dom.js';

export function renderSignIn(view, { reason, onSignedIn }) {
  const token = field({
    label: 'Service token',
    name: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    hint: 'A service token (kls_…), or an agent\u2019s own API key (cg_…) for that agent\u2019s self view. It is kept in this tab only and forgotten when you sign out or close the tab.',
  });
  const actor = field({
    label: 'Your name',
    name: 'actor',
    optional: true,
    autocomplete: 'username',
    hint: 'Recorded with every change you make (X-Actor). Printable ASCII, at most 128 characters.',
  });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const status = h('div', { class: 'form-status' });
  const form = h(
    'form',
    { class: 'card signin', novalidate: true, 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title', tabindex: '-1' }, 'Sign in to keyledger'),
    reason ? notice('info', reason) : null,
    token.wrap,
    actor.wrap,
    status,
    h('div', { class: 'actions' }, submit),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    put(status);
    const value = token.input.value.trim();
    const name = actor.input.value.trim();
    token.setError(credentialKind(value) ? '' : 'Paste a service token (kls_…) or an agent key (cg_ and 32 hex characters).');
    actor.setError(validActor(name) ? '' : 'Use at most 128 printable ASCII characters.');
    if (!credentialKind(value) || !validActor(name)) {
      form.querySelector('[aria-invalid="true"]')?.focus();
      return;
    }
    try {
      await busy(submit, () => signIn(value, name));
      token.input.value = '';
      onSignedIn();
    } catch (err) {
      if (err.status === 401) {
        token.setError('keyledger does not accept this credential: it is unknown, revoked or expired.');
        token.input.focus();
      } else {
        put(status, errorNotice(err, 'Could not sign in'));
      }
    }
  });
  put(view, form);
  token.input.focus();
}

// Modal dialogs: the one-time secret dialog and the confirm/form dialog every action uses.

import { add, busy, errorNotice, h, put, uid } from './dom.js';

function openModal(dialog) {
  add(document.body, dialog);
  dialog.showModal();
}

// Copies `text`; the async Clipboard API where the page is a secure context, else a selection.
async function copyText(text, fallbackNode) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Permission refused: fall through to the selection.
    }
  }
  const selection = window.getSelection();
  const range = document.createRange();
  range.selectNodeContents(fallbackNode);
  selection.removeAllRanges();
  selection.addRange(range);
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  return copied;
}

const SECRET_WARNINGS = {
  api_key:
    'Copy this key now and store it in a secrets manager. It cannot be shown again: keyledger keeps only a hash of it. If you lose it, generate a new key.',
  webhook_secret:
    'Copy this webhook signing secret now and configure it in the agent, which uses it to check the ClawGig-Signature header. It cannot be shown again.',
  token:
    'Copy this service token now and store it in a secrets manager. It cannot be shown again: keyledger keeps only a hash of it.',
};

// Shows a secret once. The secret lives only in this dialog's text; when the dialog closes
// the text is cleared and the dialog removed from the page. Resolves when it is closed.
export function showSecret({ title, secret, kind, facts = [] }) {
  return new Promise((resolve) => {
    const titleId = uid('secret-title');
    const warningId = uid('secret-warning');
    const value = h('code', { class: 'secret-value', 'data-secret': kind }, secret);
    const status = h('span', { class: 'copy-status', role: 'status' });
    const copy = h('button', { type: 'button', class: 'primary' }, 'Copy');
    const close = h('button', { type: 'button' }, 'Close');
    const dialog = h(
      'dialog',
      { class: 'secret', 'aria-labelledby': titleId, 'aria-describedby': warningId },
      h('h2', { id: titleId }, title),
      h('p', { class: 'warning', id: warningId }, SECRET_WARNINGS[kind]),
      // The spaces keep the secret a separate word in the dialog's text content.
      h('div', { class: 'secret-box' }, ' ', value, ' '),
      facts.length
        ? h('dl', { class: 'facts compact' }, facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))))
        : null,
      h('div', { class: 'actions' }, copy, status, close),
    );
    copy.addEventListener('click', async () => {
      const ok = await copyText(value.textContent, value);
      status.textContent = ok ? 'Copied to the clipboard.' : 'Could not copy: select the text and copy it by hand.';
    });
    // Forgets the secret at once: the close event that removes the dialog comes a task later.
    const forget = () => {
      value.textContent = '';
      window.getSelection()?.removeAllRanges();
    };
    close.addEventListener('click', () => {
      forget();
      dialog.close();
    });
    dialog.addEventListener('close', () => {
      forget();
      dialog.remove();
      resolve();
    });
    openModal(dialog);
    copy.focus();
  });
}

// A dialog with a form. `fields` are nodes (from dom.field()); `onConfirm(form)` runs when
// the person confirms: its result resolves the promise and closes the dialog; an error it
// throws is shown inside the dialog (an ApiError's `details` go next to the fields through
// `onFieldErrors(details)` when given). Cancel resolves null.
export function formDialog({ title, intro, fields = [], confirmLabel = 'Confirm', danger = false, onConfirm, onFieldErrors }) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const errorSlot = h('div', { class: 'dialog-error' });
    const confirm = h('button', { type: 'submit', class: danger ? 'danger' : 'primary' }, confirmLabel);
    const cancel = h('button', { type: 'button' }, 'Cancel');
    let result = null;
    const form = h(
      'form',
      { novalidate: true },
      h('h2', { id: titleId }, title),
      intro ? h('div', { class: 'intro' }, intro) : null,
      fields,
      errorSlot,
      h('div', { class: 'actions' }, confirm, cancel),
    );
    const dialog = h('dialog', { class: 'form-dialog', 'aria-labelledby': titleId }, form);
    cancel.addEventListener('click', () => dialog.close());
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      put(errorSlot);
      try {
        result = await busy(confirm, () => onConfirm(form));
        if (result === undefined) {
          result = true;
        }
        if (result !== false) {
          dialog.close();
        }
      } catch (err) {
        if (err.details?.length && onFieldErrors) {
          onFieldErrors(err.details);
        }
        put(errorSlot, errorNotice(err));
      }
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(result === false ? null : result);
    });
    openModal(dialog);
    (form.querySelector('input, textarea, select') || confirm).focus();
  });
}

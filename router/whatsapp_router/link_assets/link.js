// The link page's only script (served by the router, no third-party code; the page's
// Content-Security-Policy allows nothing else). The token is in the page's own URL: every
// call goes to that URL's /events, /qr.png, /pairing_code and /login.
(() => {
  'use strict';

  const FINAL = ['linked', 'expired'];
  const main = document.getElementById('link');
  const base = window.location.pathname.replace(/\/+$/, '');
  const byId = (id) => document.getElementById(id);
  let source = null;
  let expiry = null;

  function stop() {
    if (source) source.close();
    source = null;
    clearTimeout(expiry);
  }

  function showCode(code) {
    byId('pairing-code').textContent = code;
    byId('pairing').hidden = false;
  }

  function show(view) {
    main.dataset.state = view.state;
    if (view.state === 'qr') {
      const src = `${base}/qr.png?v=${encodeURIComponent(view.qr)}`;
      const image = byId('qr-image');
      if (image.getAttribute('src') !== src) image.setAttribute('src', src);
      if (view.pairing_code) showCode(view.pairing_code);
    }
    if (view.state === 'linked') byId('phone').textContent = view.phone ? `+${view.phone}` : 'the phone';
    if (FINAL.includes(view.state)) stop();
  }

  async function post(path, body) {
    const response = await fetch(`${base}/${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
    let answer = {};
    try {
      answer = await response.json();
    } catch {
      // not JSON: the message below says it failed
    }
    return { ok: response.ok, status: response.status, answer };
  }

  byId('pairing-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = event.target.querySelector('button');
    const error = byId('pairing-error');
    error.textContent = '';
    button.disabled = true;
    try {
      const { ok, status, answer } = await post('pairing_code', { phone_number: byId('phone-number').value });
      if (ok) showCode(answer.body.pairing_code);
      else if (status === 410) show({ state: 'expired' });
      else error.textContent = answer.message || 'No code could be made, try again.';
    } catch {
      error.textContent = 'The server could not be reached, try again.';
    } finally {
      button.disabled = false;
    }
  });

  for (const button of document.querySelectorAll('button.start')) {
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        const { status } = await post('login', {});
        if (status === 410) show({ state: 'expired' });
      } finally {
        button.disabled = false;
      }
    });
  }

  if (FINAL.includes(main.dataset.state)) return;
  const expiresAt = Number(main.dataset.expiresAt) * 1000;
  expiry = setTimeout(() => show({ state: 'expired' }), Math.max(0, expiresAt - Date.now()));
  source = new EventSource(`${base}/events`);
  source.addEventListener('view', (event) => show(JSON.parse(event.data)));
})();

// The WhatsApp Web double's stand-in for @wppconnect/wa-js: a subset of `window.WPP` with
// wa-js's names and return shapes, backed by the double's server over the WebSocket /ws.
// The login lives where WhatsApp Web keeps it: localStorage `last-wid-md` and `WANoiseInfo`,
// and the IndexedDB database `wawc` (object store `user`). Both halves must be present and
// agree for a session to be restored.
(() => {
  'use strict';

  const DB = 'wawc';
  const STORE = 'user';
  const TOKEN_KEY = 'device-token';
  const STREAM_INFO = { QR: 'NORMAL', SYNCING: 'SYNCING', MAIN: 'NORMAL', OFFLINE: 'CONNECTING' };

  const state = {
    ready: false,
    mode: 'OFFLINE',
    online: false,
    authenticated: false,
    registered: false,
    qrShown: false,
    widMd: null, // "5491100000001:12@c.us", as in `last-wid-md`
    token: null,
    authCode: null,
  };
  const listeners = new Map();
  const readyListeners = [];
  const pending = new Map();
  let socket = null;
  let nextRequestId = 1;
  let inbox = Promise.resolve();

  // ---- models ---------------------------------------------------------------------------

  // Like wa-js's Wid and MsgKey classes: data as own properties, toString on the prototype.
  class Wid {
    constructor(serialized) {
      [this.user, this.server] = serialized.split('@');
      this._serialized = serialized;
    }

    toString() {
      return this._serialized;
    }
  }

  class MsgKey {
    constructor({ fromMe, remote, id, _serialized }) {
      Object.assign(this, { fromMe, remote: new Wid(remote), id, _serialized });
    }

    toString() {
      return this._serialized;
    }
  }

  const wid = (serialized) => new Wid(serialized);
  const msgKey = (key) => new MsgKey(key);
  const message = (raw) => {
    const model = { ...raw, id: msgKey(raw.id), from: wid(raw.from), to: wid(raw.to) };
    if (raw.author) model.author = wid(raw.author);
    return model;
  };
  const withWid = (raw) => ({ ...raw, id: wid(raw.id) });
  const idOf = (chatId) => (chatId && chatId._serialized) || String(chatId);

  // ---- events ---------------------------------------------------------------------------

  function emit(name, ...args) {
    for (const listener of [...(listeners.get(name) || [])]) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`WPP listener of ${name} failed`, error);
      }
    }
  }

  function render() {
    const status = document.getElementById('status');
    if (status) {
      const code = state.authCode ? `\n${state.authCode.fullCode}` : '';
      status.textContent = `${state.mode}${state.widMd ? ` ${state.widMd}` : ''}${code}`;
    }
  }

  function setMode(mode) {
    if (mode === state.mode) return;
    state.mode = mode;
    emit('conn.stream_mode_changed', mode);
    // wa-js fires main_ready on the first QR or MAIN of a page load: "loaded", not "logged in".
    if (mode === 'MAIN' || (mode === 'QR' && !state.qrShown)) emit('conn.main_ready');
    if (mode === 'QR') state.qrShown = true;
    render();
  }

  function setOnline(online) {
    if (online === state.online) return;
    state.online = online;
    emit('conn.online', online);
  }

  function setAuthCode(code) {
    state.authCode = code;
    emit('conn.auth_code_change', code);
    render();
  }

  // ---- login storage --------------------------------------------------------------------

  function openDb() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(DB, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: 'key' });
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  // Runs one operation in its own transaction; resolves once the transaction committed.
  async function inStore(mode, operation) {
    const db = await openDb();
    try {
      return await new Promise((resolve, reject) => {
        const tx = db.transaction(STORE, mode, { durability: 'strict' });
        const request = operation(tx.objectStore(STORE));
        tx.oncomplete = () => resolve(request.result);
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error);
      });
    } finally {
      db.close();
    }
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  async function readLogin() {
    const widMd = parseJson(localStorage.getItem('last-wid-md'));
    const noise = parseJson(localStorage.getItem('WANoiseInfo'));
    const record = await inStore('readonly', (store) => store.get(TOKEN_KEY));
    const token = noise && noise.token;
    const complete = typeof widMd === 'string' && token && record && record.value === token;
    return complete ? { widMd, token } : null;
  }

  async function storeLogin(widMd, token) {
    await inStore('readwrite', (store) => store.put({ key: TOKEN_KEY, value: token }));
    localStorage.setItem('WANoiseInfo', JSON.stringify({ token }));
    localStorage.setItem('last-wid-md', JSON.stringify(widMd));
  }

  async function forgetLogin(reason) {
    localStorage.removeItem('last-wid-md');
    localStorage.removeItem('WANoiseInfo');
    await inStore('readwrite', (store) => store.delete(TOKEN_KEY));
    Object.assign(state, { widMd: null, token: null, authenticated: false, registered: false });
    emit('conn.logout_reason', reason);
    emit('conn.logout');
    render();
  }

  // After a logout WhatsApp Web reloads itself; a short delay lets a pending
  // `await WPP.conn.logout()` return to its caller first.
  const reloadSoon = () => setTimeout(() => location.reload(), 100);

  // ---- the socket to the double ---------------------------------------------------------

  const handlers = {
    qr: ({ code }) => {
      state.authCode = code; // already in place for the listeners of the mode change
      setOnline(true);
      setMode('QR');
      setAuthCode(code);
    },
    qr_idle: () => {
      setAuthCode(null);
      emit('conn.qrcode_idle');
    },
    resume: () => {
      state.authenticated = true;
      setOnline(true);
      setMode('SYNCING');
    },
    authenticated: async ({ wid: widMd, token }) => {
      await storeLogin(widMd, token);
      Object.assign(state, { widMd, token, authenticated: true, registered: true });
      send({ type: 'stored' });
      setAuthCode(null);
      emit('conn.authenticated');
      setMode('SYNCING');
    },
    main: () => setMode('MAIN'),
    invalid: ({ reason }) => forgetLogin(reason),
    logout: async ({ reason }) => {
      await forgetLogin(reason);
      reloadSoon();
    },
    message: ({ message: raw }) => emit('chat.new_message', message(raw)),
    ack: ({ ack, chat, ids }) => emit('chat.msg_ack_change', { ack, chat: wid(chat), ids: ids.map(msgKey) }),
    response: ({ id, result, error }) => {
      const request = pending.get(id);
      pending.delete(id);
      if (request && error !== undefined) request.reject(new Error(error));
      else if (request) request.resolve(result);
    },
    crash: () => {
      for (;;) {
        // A hung page: the session pod has to notice it.
      }
    },
  };

  function send(payload) {
    socket.send(JSON.stringify(payload));
  }

  function connect() {
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
    socket = ws;
    ws.onopen = () => send({ type: 'hello', wid: state.widMd, token: state.token });
    ws.onmessage = (event) => {
      const payload = JSON.parse(event.data);
      // One at a time and in order: storing the login must finish before what follows.
      inbox = inbox.then(() => handlers[payload.type](payload)).catch((error) => console.error(error));
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      for (const request of pending.values()) request.reject(new Error('WhatsApp Web is offline'));
      pending.clear();
      setOnline(false);
      setMode('OFFLINE');
      setTimeout(connect, 1000);
    };
  }

  function request(method, params = {}) {
    return new Promise((resolve, reject) => {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        reject(new Error('WhatsApp Web is offline'));
        return;
      }
      const id = nextRequestId++;
      pending.set(id, { resolve, reject });
      send({ type: 'request', id, method, params });
    });
  }

  // ---- window.WPP -----------------------------------------------------------------------

  const WPP = {
    get isReady() {
      return state.ready;
    },
    loader: {
      get isReady() {
        return state.ready;
      },
      onReady(listener, delay = 0) {
        if (state.ready) setTimeout(listener, delay);
        else readyListeners.push(() => setTimeout(listener, delay));
      },
    },
    on(name, listener) {
      listeners.set(name, [...(listeners.get(name) || []), listener]);
      return WPP;
    },
    off(name, listener) {
      listeners.set(name, (listeners.get(name) || []).filter((l) => l !== listener));
      return WPP;
    },
    conn: {
      getAuthCode: async () => state.authCode,
      refreshQR: () => request('refresh_qr'),
      isAuthenticated: () => state.authenticated,
      isRegistered: () => state.registered,
      getStreamData: () => ({ mode: state.mode, info: STREAM_INFO[state.mode] }),
      getMyUserId: () => {
        if (!state.widMd) return undefined;
        const [user, server] = state.widMd.split('@');
        return wid(`${user.split(':')[0]}@${server}`);
      },
      getHistorySyncProgress: () => {
        const inProgress = state.mode === 'SYNCING';
        const progress = { MAIN: 100, SYNCING: 0 }[state.mode] ?? null;
        return { progress, paused: false, inProgress };
      },
      logout: async () => {
        await request('logout');
        await forgetLogin('user_initiated');
        reloadSoon();
        return true;
      },
    },
    chat: {
      sendTextMessage: async (chatId, content) => {
        const sent = message(await request('send_text', { chatId: idOf(chatId), content: String(content) }));
        emit('chat.new_message', sent);
        return {
          id: sent.id._serialized,
          from: sent.from._serialized,
          to: sent.to._serialized,
          ack: sent.ack,
          sendMsgResult: { messageSendResult: 'OK', t: sent.t },
        };
      },
      archive: async (chatId, archive = true) => {
        const result = await request('archive', { chatId: idOf(chatId), archive });
        return { wid: wid(result.wid), archive: result.archive };
      },
      list: async (options = {}) => (await request('chat_list', { count: options.count })).map(withWid),
      getMessages: async (chatId, options = {}) =>
        (await request('get_messages', { chatId: idOf(chatId), count: options.count })).map(message),
    },
    contact: {
      list: async () => (await request('contact_list')).map(withWid),
      queryWidExists: async (contactId) => {
        const found = await request('query_wid', { id: idOf(contactId) });
        return found && { wid: wid(found.wid), biz: found.biz };
      },
    },
  };
  window.WPP = WPP;

  async function boot() {
    try {
      const login = await readLogin();
      if (login) Object.assign(state, { widMd: login.widMd, token: login.token, registered: true });
    } catch (error) {
      console.error('WhatsApp Web double: cannot read the login', error);
    }
    state.ready = true;
    for (const listener of readyListeners.splice(0)) listener();
    render();
    connect();
  }

  boot();
})();
